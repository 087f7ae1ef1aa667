from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edge.artifact import read_artifact, write_artifact
from edge.families.eeg.export import eeg_meta, export_onnx
from edge.families.eeg.models import (
    apply_max_norm,
    build_eeg_tcnet,
    build_eegnet,
    build_qeegnet,
    build_shallow_convnet,
    count_parameters,
)
from edge.summary import summarize
from runtimes import open_session

CHANNELS_22 = [f"E{i}" for i in range(1, 23)]


def test_eegnet_parameter_counts_match_arl_eegmodels() -> None:
    # bci.md §5.1: C=22, T=256, 4 classes -> 1,972 (kernLength 64) and 1,716 (kernLength 32).
    assert count_parameters(build_eegnet(22, 256, 4)) == 1_972
    assert count_parameters(build_eegnet(22, 256, 4, kern_length=32)) == 1_716
    net = build_eegnet(22, 256, 4)
    layers = [net.temporal, net.bn1, net.spatial, net.bn2, net.separable_depth, net.separable_point, net.bn3,
              net.classifier]
    assert [count_parameters(m) for m in layers] == [512, 16, 352, 32, 256, 256, 32, 516]


def test_qeegnet_pools_eight_and_eight() -> None:
    net = build_qeegnet(22, 1125, 4)
    assert net.pool1.kernel_size == (1, 8) and net.pool2.kernel_size == (1, 8)
    assert net.temporal.kernel_size == (1, 64)
    # 1,456 in the convolutions and batch norms + dense 16 * (1125 // 64 = 17) * 4 + 4. bci.md §5.1
    # quotes 3,700 at T=1120, which is 1,456 + 16 * 35 * 4 + 4: the count with pools 4 and 8.
    assert count_parameters(net) == 2_548
    assert count_parameters(build_eegnet(22, 1120, 4)) == 3_700


def test_shallow_convnet_parameter_count_matches_braindecode() -> None:
    # Keras-style layers (temporal conv with bias, spatial conv without, BN, dense) give exactly
    # braindecode's ShallowFBCSPNet count, bci.md §5.2: 1,040 + 35,200 + 80 + 40 * 69 * 4 + 4.
    net = build_shallow_convnet(22, 1125, 4)
    assert count_parameters(net) == 47_364
    assert [count_parameters(m) for m in (net.temporal, net.spatial, net.bn, net.classifier)] == [
        1_040, 35_200, 80, 11_044]


def test_eeg_tcnet_parameter_count() -> None:
    # 4,096, not the ~4,048 of bci.md §5.3 (braindecode's 4,304 at KE=64 minus 8 * 32): the Keras
    # original keeps Conv1D's default biases in the four dilated TCN convolutions (4 * 12 = 48), which
    # braindecode drops as redundant before batch norm. At KE=64 this port has 4,352 = 4,304 + 48.
    assert count_parameters(build_eeg_tcnet(22, 1125, 4)) == 4_096
    assert count_parameters(build_eeg_tcnet(22, 1125, 4, KE=64)) == 4_352
    net = build_eeg_tcnet(22, 1125, 4)
    first, second = net.tcn
    assert [count_parameters(m) for m in (first.conv1, first.bn1, first.conv2, first.bn2, first.skip)] == [
        780, 24, 588, 24, 204]
    assert second.skip is None and second.conv1.dilation == (1, 2)


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (lambda: build_eegnet(22, 256, 4), (3, 1, 22, 256)),
        (lambda: build_qeegnet(22, 1125, 4), (3, 1, 22, 1125)),
        (lambda: build_shallow_convnet(22, 1125, 4), (3, 1, 22, 1125)),
        (lambda: build_eeg_tcnet(22, 1125, 4), (3, 1, 22, 1125)),
    ],
)
def test_networks_map_trials_to_logits(build, shape) -> None:
    assert build().eval()(torch.randn(*shape)).shape == (3, 4)


def test_same_padding_puts_the_odd_sample_on_the_right_like_keras() -> None:
    net = build_eegnet(4, 64, 2).eval()
    x = torch.randn(2, 1, 4, 64)
    explicit = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (31, 32)), net.temporal.weight)
    torch.testing.assert_close(net.temporal(x), explicit)


def test_tcn_blocks_are_causal() -> None:
    torch.manual_seed(0)
    block = build_eeg_tcnet(22, 1125, 4).tcn[1].eval()
    x = torch.randn(1, 12, 1, 20)
    later = x.clone()
    later[..., 12:] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(block(x)[..., :12], block(later)[..., :12])
        assert not torch.allclose(block(x)[..., 12:], block(later)[..., 12:])


def test_max_norm_rescales_each_output_unit_and_leaves_small_ones() -> None:
    net = build_shallow_convnet(4, 200, 2)
    with torch.no_grad():
        net.spatial.weight.mul_(100.0)
        net.classifier.weight.zero_()
        net.classifier.weight[0, 0] = 0.1
    apply_max_norm(net)
    norms = net.spatial.weight.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0))
    assert float(net.classifier.weight.detach()[0, 0]) == pytest.approx(0.1)
    assert net.max_norm == {"temporal": 2.0, "spatial": 2.0, "classifier": 0.5}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_eegnet(22, 16, 4), "'samples' parameter of build_eegnet must be an integer >= 32; got 16"),
        (lambda: build_eegnet(22, 256, 4, activation="tanh"), "'activation' parameter of build_eegnet must be one of"),
        (lambda: build_eeg_tcnet(22, 1125, 1), "'classes' parameter of build_eeg_tcnet must be an integer >= 2"),
        (lambda: build_shallow_convnet(22, 90, 4), "'samples' parameter of build_shallow_convnet must be an integer >= 99"),
        (lambda: eeg_meta(["C3", "C4"], 160, 4, ["a", "b"], standardize={"mean": [0.0], "std": [1.0]}),
         "needs 'mean' and 'std' lists of 2 values"),
        (lambda: eeg_meta(["C3"], 160, 4, ["a", "b"], band=(30, 8)), "'band' parameter of eeg_meta"),
    ],
)
def test_bad_parameters_say_which_and_why(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _randomise_batch_norm(net: torch.nn.Module, seed: int) -> None:
    """Non-trivial batch-norm statistics, so that folding them into the convolutions is exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)


@pytest.mark.parametrize(
    ("arch", "build", "samples", "ops"),
    [
        ("eegnet-8,2", lambda: build_eegnet(22, 256, 4), 256, {"Conv", "Elu", "AveragePool", "Flatten", "Gemm"}),
        ("shallow-convnet", lambda: build_shallow_convnet(22, 1125, 4), 1125,
         {"Conv", "Mul", "AveragePool", "Constant", "Clip", "Log", "Flatten", "Gemm"}),
        ("eeg-tcnet", lambda: build_eeg_tcnet(22, 1125, 4), 1125,
         {"Conv", "Elu", "AveragePool", "Constant", "Slice", "BatchNormalization", "Add", "Flatten", "Gemm"}),
    ],
)
def test_onnx_export_matches_pytorch(arch, build, samples, ops) -> None:
    torch.manual_seed(1)
    net = build()
    _randomise_batch_norm(net, 1)
    net.eval()
    meta = eeg_meta(CHANNELS_22, 250.0, samples / 250.0, ["left", "right", "feet", "tongue"], tmin_s=1.5, arch=arch)
    artifact = export_onnx(net, meta, {"epochs": 0})
    graph_ops = {node.op_type for node in artifact.model.graph.node}
    assert graph_ops == ops  # no Pad chains, Identity or If from the exporter
    x = np.random.default_rng(0).normal(size=(5, 1, 22, samples)).astype(np.float32)
    (onnx_out,) = open_session(artifact).run({"eeg": x})
    with torch.no_grad():
        torch_out = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)


def test_same_convolutions_export_as_same_upper() -> None:
    artifact = export_onnx(build_eegnet(22, 256, 4), eeg_meta(CHANNELS_22, 128.0, 2.0, ["a", "b", "c", "d"]))
    pads = {n.name: onnx.helper.get_attribute_value(a) for n in artifact.model.graph.node for a in n.attribute
            if a.name == "auto_pad"}
    assert pads == {"/temporal/Conv": b"SAME_UPPER", "/separable_depth/Conv": b"SAME_UPPER"}


def test_metadata_round_trips_and_summary_counts_macs(tmp_path) -> None:
    channels = ["C3", "Cz", "C4"]
    stats = {"mean": [0.1, -0.2, 0.3], "std": [10.0, 12.0, 11.0]}
    meta = eeg_meta(channels, 160.0, 4.0, ["both fists", "both feet"], tmin_s=0.5, band=(8.0, 30.0),
                    standardize=stats, arch="eegnet-8,2")
    artifact = export_onnx(build_eegnet(3, 640, 2, kern_length=80), meta, {"epochs": 3, "seed": 0})
    again = read_artifact(write_artifact(artifact, tmp_path / "eeg.onnx"))
    assert again.meta.family == "eeg"
    assert again.meta.task == {"type": "classification", "kind": "motor-imagery", "n_classes": 2, "arch": "eegnet-8,2"}
    assert again.meta.inputs[0].shape == ["batch", 1, 3, 640]
    assert again.meta.inputs[0].layout == "N,1,channel,time"
    assert again.meta.outputs[0].name == "logits" and again.meta.outputs[0].shape == ["batch", 2]
    pre = again.meta.preprocessing
    assert (pre.sample_rate, pre.channels, pre.window_s, pre.latency_s) == (160.0, channels, 4.0, 0.5)
    assert pre.filter["band_hz"] == [8.0, 30.0] and pre.filter["zero_phase"] is True
    assert pre.filter["standardize"]["mean"] == stats["mean"] and pre.filter["standardize"]["std"] == stats["std"]
    assert again.meta.labels == ["both fists", "both feet"]
    assert again.meta.provenance[0].name == "train-eegnet" and again.meta.provenance[0].params["seed"] == 0
    # temporal 8*80*3*640 + depthwise 16*3*640 + separable 16*16*160 * 2 + dense 16*20*2
    summary = summarize(again.model)
    assert summary.macs == 1_228_800 + 30_720 + 81_920 + 640
    assert summary.parameters == 1_882  # 1,922 trainable minus 80 batch-norm scales/shifts plus 40 folded biases


def test_eeg_meta_without_band_or_standardisation_has_no_filter() -> None:
    meta = eeg_meta(["C3", "C4"], 250, 4.5, ["a", "b", "c"], kind="erp")
    assert meta.preprocessing.filter == {}
    assert meta.task["kind"] == "erp"
    assert meta.inputs[0].shape == ["batch", 1, 2, 1125]
