from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.data.spike_encoding import rate_encode
from edge.errors import DataError, EdgeError
from edge.families.snn.train import (
    REFERENCE_CONFIG,
    REFERENCE_ENCODING,
    SnnConfig,
    SpikingClassifier,
    build_classifier,
    layers_of,
    predict_scores,
    simulate_numpy,
    spike_rates,
    train_snn,
)

torch.set_num_threads(1)
CONFIG = SnnConfig(hidden=(24, 16), epochs=8, batch_size=32, lr=1e-2, beta=0.8, seed=0)


def _problem(trials: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of rate-coded prototypes over 16 inputs and 20 steps; chance is 25 %."""
    prototypes = np.random.default_rng(0).random((4, 16))
    y = np.random.default_rng(seed).integers(0, 4, trials)
    return rate_encode(prototypes[y], 20, seed=seed), y


@pytest.fixture(scope="module")
def trained():
    x, y = _problem(240, seed=1)
    x_val, y_val = _problem(80, seed=2)
    model, history = train_snn(x, y, x_val, y_val, CONFIG)
    return model, history, x_val, y_val


def test_training_learns_and_keeps_the_best_validation_epoch(trained) -> None:
    model, history, x_val, y_val = trained
    assert isinstance(model, SpikingClassifier) and not model.training
    accuracy = float(np.mean(predict_scores(model, x_val).argmax(1) == y_val))
    assert accuracy > 0.7  # chance is 0.25
    assert accuracy == max(history["val_accuracy"]) == history["val_accuracy"][history["best_epoch"] - 1]
    assert len(history["train_loss"]) == len(history["spike_rate"]) == CONFIG.epochs
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert all(0 < rate < 1 for rate in spike_rates(model, x_val))


def test_numpy_simulation_of_the_exported_layers_matches_torch(trained) -> None:
    model, _, x_val, _ = trained
    layers = layers_of(model)
    assert [layer["kind"] for layer in layers] == ["lif", "lif", "li"]
    assert layers[0]["weight"].shape == (24, 16) and layers[1]["threshold"].shape == (16,)
    assert layers[2]["weight"].shape == (4, 16) and set(layers[2]) == {"kind", "weight", "bias", "beta"}
    assert all(a.dtype == np.float32 for layer in layers for a in layer.values() if isinstance(a, np.ndarray))
    betas = np.concatenate([layer["beta"] for layer in layers])
    assert np.all((betas > 0) & (betas <= 1)) and np.unique(betas).size > 1  # learned per neuron
    ours = simulate_numpy(layers, x_val)
    theirs = predict_scores(model, x_val)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


def test_spikes_follow_the_documented_lif_recursion() -> None:
    torch.manual_seed(0)
    model = build_classifier(3, 2, SnnConfig(hidden=(5,), beta=0.5, threshold=0.4))
    x = torch.from_numpy(rate_encode(np.full((2, 3), 0.6), 6, seed=0))
    scores, (spikes,) = model.run(x)
    w, b = model.fcs[0].weight.detach(), model.fcs[0].bias.detach()
    v = torch.zeros(2, 5)
    for t in range(6):
        v = 0.5 * v + x[:, t] @ w.T + b
        z = (v > 0.4).float()
        torch.testing.assert_close(spikes[:, t], z)
        v = torch.where(z > 0, 0.0, v)
    assert scores.shape == (2, 2)
    scores.sum().backward()  # the surrogate lets gradients reach the first layer
    assert model.fcs[0].weight.grad.abs().sum() > 0


def test_training_is_seeded_and_the_rate_regulariser_lowers_spiking() -> None:
    x, y = _problem(64, seed=3)
    quick = SnnConfig(hidden=(16,), epochs=3, batch_size=16, lr=1e-2, seed=5)
    a, _ = train_snn(x, y, None, None, quick)
    b, history = train_snn(x, y, None, None, quick)
    np.testing.assert_array_equal(predict_scores(a, x), predict_scores(b, x))
    assert history["best_epoch"] == 3 and history["val_accuracy"] == []
    quiet, _ = train_snn(x, y, None, None, SnnConfig(**{**quick.__dict__, "rate_weight": 50.0, "rate_target": 0.0}))
    assert spike_rates(quiet, x)[0] < spike_rates(a, x)[0]


def test_bad_training_data_are_refused() -> None:
    x, y = _problem(8, seed=0)
    with pytest.raises(DataError, match=r"\[trials, time steps, features\]"):
        train_snn(x[:, 0], y, None, None, CONFIG)
    with pytest.raises(DataError, match="8 trials but 7 labels"):
        train_snn(x, y[:7], None, None, CONFIG)
    with pytest.raises(DataError, match="lif layers followed by one li"):
        simulate_numpy([], x)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"beta": 1.5}, r"'beta' must be in \(0, 1\]; got 1.5"), ({"hidden": ()}, "'hidden' must list"),
     ({"lr_schedule": "step"}, "'lr_schedule' must be 'cosine' or 'constant'; got 'step'")],
)
def test_bad_configs_are_refused(change: dict, message: str) -> None:
    x, y = _problem(8, seed=0)
    with pytest.raises(EdgeError, match=message):
        train_snn(x, y, None, None, SnnConfig(**{**CONFIG.__dict__, **change}))


def test_reference_recipe_is_plain_json() -> None:
    import json

    assert json.loads(json.dumps(REFERENCE_ENCODING)) == REFERENCE_ENCODING
    assert all(n <= 256 for n in REFERENCE_CONFIG.hidden)
