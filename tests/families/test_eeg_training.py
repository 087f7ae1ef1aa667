from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from converters.quantize import QuantizeInt8
from edge.artifact import read_artifact
from edge.errors import DataError
from edge.families.eeg import reference
from edge.families.eeg.export import eeg_meta, export_onnx
from edge.families.eeg.models import build_eeg_tcnet, build_eegnet, build_shallow_convnet
from edge.families.eeg.train import TrainConfig, predict, train
from edge.zoo import ZOO_DIR
from runtimes import open_session

EEGMMIDB = reference.default_data_dir() / reference.DATASET
ZOO_MODEL = ZOO_DIR / "eegnet_mmi_s001.onnx"
ZOO_CARD = ZOO_DIR / "EEGNET_MODEL_CARD.md"


def _toy_trials(seed: int = 0, channels: int = 4, samples: int = 128, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Two classes that differ in the power of a 10 Hz rhythm on channel 0 (sample rate 128 Hz)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 1, channels, samples))
    t = np.arange(samples) / 128.0
    x[:, 0, 0] += (1 + 2 * y)[:, None] * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    return x.astype(np.float32), y


def _unit_norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().flatten(1).norm(dim=1)


@pytest.mark.parametrize(
    "build",
    [lambda: build_eegnet(4, 128, 2, kern_length=32), lambda: build_shallow_convnet(4, 128, 2, pool=35, stride=7),
     lambda: build_eeg_tcnet(4, 128, 2)],
)
def test_max_norm_constraints_hold_after_training_steps(build) -> None:
    x, y = _toy_trials()
    torch.manual_seed(0)
    net = build()
    with torch.no_grad():  # start far outside the limits, as a big learning rate would push them
        for name in net.max_norm:
            dict(net.named_modules())[name].weight.mul_(50.0)
    train(net, x, y, TrainConfig(epochs=2, batch_size=8, lr=0.05, seed=0, threads=1))
    modules = dict(net.named_modules())
    for name, limit in net.max_norm.items():
        assert float(_unit_norms(modules[name].weight).max()) <= limit * (1 + 1e-5), name


def test_eegnet_constraints_are_the_published_ones() -> None:
    assert build_eegnet(22, 256, 4).max_norm == {"spatial": 1.0, "classifier": 0.25}
    assert build_eeg_tcnet(22, 1125, 4).max_norm == {"spatial": 1.0, "classifier": 0.25}


def test_seeded_training_is_deterministic_and_reports_each_epoch() -> None:
    x, y = _toy_trials()
    config = TrainConfig(epochs=3, batch_size=8, seed=5, threads=1)

    def run(seed: int, epochs_seen: list[int] | None = None) -> np.ndarray:
        torch.manual_seed(0)
        net = build_eegnet(4, 128, 2, kern_length=32)
        hook = None if epochs_seen is None else (lambda epoch, _net: epochs_seen.append(epoch))
        train(net, x, y, TrainConfig(**{**config.__dict__, "seed": seed}), on_epoch=hook)
        assert not net.training
        return predict(net, x)

    seen: list[int] = []
    first = run(5, seen)
    assert seen == [1, 2, 3]
    np.testing.assert_array_equal(first, run(5))
    assert not np.array_equal(first, run(6))  # the seed drives shuffling and dropout


def test_training_refuses_inputs_in_the_wrong_layout() -> None:
    x, y = _toy_trials()
    net = build_eegnet(4, 128, 2, kern_length=32)
    with pytest.raises(DataError, match=r"shaped \(trials, 1, channels, samples\); got \(24, 4, 128\)"):
        train(net, x[:, 0], y, TrainConfig(epochs=1))
    with pytest.raises(DataError, match="24 trials but 23 labels"):
        train(net, x, y[:-1], TrainConfig(epochs=1))


def test_short_training_on_real_motor_imagery_beats_chance_on_the_held_out_run() -> None:
    if not EEGMMIDB.is_dir():
        pytest.skip(f"real recordings not found at {EEGMMIDB}")
    train_set = reference.load_runs(reference.TRAIN_RUNS)
    heldout = reference.load_runs(reference.HELDOUT_RUNS)
    assert (len(train_set), len(heldout)) == (30, 15)
    assert set(train_set.block) == {6, 10} and set(heldout.block) == {14}  # no held-out trial in training
    stats = reference.channel_statistics(train_set)
    x_train, x_heldout = reference.model_input(train_set, stats), reference.model_input(heldout, stats)

    torch.manual_seed(0)
    net = build_eegnet(21, 640, 2, kern_length=80)
    train(net, x_train, train_set.y, TrainConfig(epochs=60, batch_size=8, lr=3e-3, seed=0, threads=1))
    correct = int(np.sum(predict(net, x_heldout).argmax(1) == heldout.y))
    # 12 of 15 or better: one-sided binomial p < 0.02 against the 50 % chance level.
    assert correct >= 12
    assert binomtest(correct, 15, 0.5, alternative="greater").pvalue < 0.02

    meta = eeg_meta(reference.CHANNELS, 160.0, reference.WINDOW_S, list(reference.CLASSES.values()),
                    band=reference.BAND, standardize=stats)
    fp32 = export_onnx(net, meta)
    int8 = QuantizeInt8()(fp32, x_train)
    (fp32_logits,) = open_session(fp32).run({"eeg": x_heldout})
    (int8_logits,) = open_session(int8).run({"eeg": x_heldout})
    assert np.sum(fp32_logits.argmax(1) == int8_logits.argmax(1)) >= 14
    assert np.sum(int8_logits.argmax(1) == heldout.y) >= correct - 1


def test_shipped_reference_reproduces_its_held_out_accuracy_and_card() -> None:
    artifact = read_artifact(ZOO_MODEL)
    extra = artifact.meta.extra
    assert artifact.meta.family == "eeg" and artifact.meta.labels == ["both fists", "both feet"]
    assert (extra["training_runs"], extra["heldout_runs"]) == (["R06", "R10"], ["R14"])
    assert extra["keep_float"] == [] and "calibration_data" in extra
    card = ZOO_CARD.read_text()
    assert "python -m edge.families.eeg.reference --output edge/zoo/eegnet_mmi_s001.onnx" in card
    assert f"{100 * extra['heldout_accuracy']:.1f}" in card
    if not EEGMMIDB.is_dir():
        pytest.skip(f"real recordings not found at {EEGMMIDB}")
    heldout = reference.load_runs(extra["heldout_runs"])
    x = reference.model_input(heldout, artifact.meta.preprocessing.filter["standardize"])
    (logits,) = open_session(artifact).run({"eeg": x})
    assert float(np.mean(logits.argmax(1) == heldout.y)) == pytest.approx(extra["heldout_accuracy"])


def test_reference_data_folder_is_found_beside_the_repository() -> None:
    import os

    expected = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    assert os.path.normpath(reference.default_data_dir()) == os.path.normpath(expected)
