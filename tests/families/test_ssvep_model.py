from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.artifact import read_artifact, write_artifact
from edge.families.ssvep.export import export_onnx, ssvep_meta
from edge.families.ssvep.metrics import itr_bits_per_min, itr_per_group, wolpaw_bits
from edge.families.ssvep.model import build_guney_net
from edge.summary import summarize
from runtimes import open_session


def test_parameter_counts_match_the_published_architecture() -> None:
    # bci.md §1.1: 414,283 at 9 channels / 0.4 s, 420,883 at 64 channels, 774,283 at 1.0 s.
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(build_guney_net(channels=9, samples=100)) == 414_283
    assert count(build_guney_net(channels=64, samples=100)) == 420_883
    assert count(build_guney_net(channels=9, samples=250)) == 774_283
    net = build_guney_net()
    assert [count(m) for m in (net.sub_band, net.channel, net.time1, net.time2, net.fc)] == [
        3, 1_200, 28_920, 144_120, 240_040]


def test_initialisation_and_layer_shapes() -> None:
    torch.manual_seed(0)
    net = build_guney_net()
    assert torch.all(net.sub_band.weight == 1.0)
    assert net.sub_band.bias is None
    assert abs(float(net.fc.weight.detach().std()) - 0.01) < 0.001
    assert float(net.channel.bias.detach().abs().max()) == 0.0
    assert (net.drop1.p, net.drop2.p, net.drop3.p) == (0.1, 0.1, 0.95)
    assert net.time1.stride == (1, 2) and net.time1.kernel_size == (1, 2)
    assert net.eval()(torch.zeros(3, 3, 9, 100)).shape == (3, 40)


def test_time_conv_2_pads_four_left_five_right_like_matlab() -> None:
    net = build_guney_net().eval()
    x = torch.randn(1, 120, 1, 50)
    explicit = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (4, 5)), net.time2.weight, net.time2.bias)
    torch.testing.assert_close(net.time2(x), explicit)


def test_dropout_sits_before_the_only_relu() -> None:
    net = build_guney_net().train()
    net.set_dropout(1.0, 0.0)  # drop everything before the ReLU: output is the FC bias alone
    with torch.no_grad():
        net.fc.bias.fill_(0.5)
        out = net(torch.randn(2, 3, 9, 100))
    torch.testing.assert_close(out, torch.full((2, 40), 0.5))


def test_onnx_export_matches_pytorch_and_carries_metadata(tmp_path) -> None:
    torch.manual_seed(1)
    net = build_guney_net().eval()
    meta = ssvep_meta()
    artifact = export_onnx(net, meta, params={"stage": "global"})
    path = write_artifact(artifact, tmp_path / "ssvep.onnx")
    again = read_artifact(path)
    assert again.meta.family == "ssvep"
    assert again.meta.inputs[0].shape == ["batch", 3, 9, 100]
    assert again.meta.preprocessing.channels == ["PZ", "PO5", "PO3", "POZ", "PO4", "PO6", "O1", "OZ", "O2"]
    assert again.meta.preprocessing.latency_s == 0.14
    assert len(again.meta.labels) == 40 and again.meta.labels[8] == "8.2 Hz"
    assert again.meta.provenance[0].name == "train-guney"
    x = np.random.default_rng(0).normal(scale=10, size=(4, 3, 9, 100)).astype(np.float32)
    (onnx_out,) = open_session(again).run({"eeg": x})
    with torch.no_grad():
        torch_out = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)
    # bci.md §1.1: about 9.0 M MACs per inference at 9 channels, 0.4 s.
    macs = summarize(again.model).macs
    assert 8.9e6 < macs < 9.1e6


def test_itr_matches_the_published_conventions() -> None:
    assert itr_bits_per_min(1.0, 40, 0.4) == pytest.approx(354.795, abs=1e-3)  # log2(40)*60/0.9
    assert itr_bits_per_min(0.7989, 40, 0.4) == pytest.approx(235.67, abs=0.01)  # bci.md §1.5 table
    assert itr_bits_per_min(0.02, 40, 0.4) == 0.0
    assert wolpaw_bits(0.5, 2) == 0.0
    assert itr_bits_per_min(1.0, 40, 0.4, gaze_shift_s=0.0) == pytest.approx(np.log2(40) * 150)
    with pytest.raises(ValueError, match="accuracy"):
        wolpaw_bits(1.5, 40)


def test_itr_per_group_averages_per_entry_itrs() -> None:
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 1], bool)
    groups = np.array(["a"] * 4 + ["b"] * 4)
    per_group = itr_per_group(correct, groups, 40, 0.4)
    assert per_group[0] == pytest.approx(itr_bits_per_min(1.0, 40, 0.4))
    assert per_group[1] == pytest.approx(itr_bits_per_min(0.5, 40, 0.4))
    # Averaging per-entry ITRs differs from the ITR of the mean accuracy (bci.md §2).
    assert per_group.mean() != pytest.approx(itr_bits_per_min(0.75, 40, 0.4))
