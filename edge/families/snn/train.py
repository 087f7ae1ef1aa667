"""Surrogate-gradient training of the reference feed-forward spiking classifier.

Discrete-time semantics, shared bit for bit (up to float rounding) with ``simulate_numpy`` and the
NIR/ONNX exporters. For each step t and hidden layer l (weights W (out, in), bias b, per-neuron decay
0 < beta <= 1 and threshold theta; s_0[t] is the input spike vector)::

    v = beta * v + W @ s_{l-1}[t] + b        # membrane, starts at 0
    z = v > theta                             # spike, 0/1
    v = where(z, 0, v)                        # reset to zero
    s_l[t] = z

and a non-spiking leaky-integrator readout ``u = beta_out * u + W_out @ s_L[t] + b_out`` (u starts at
0) whose mean over the T steps is the class score. In NIR terms the hidden layers are LIF and the
readout is LI with tau = dt / (1 - beta), r = tau / dt and v_leak = 0.

In the backward pass the spike's step function is replaced by a fast-sigmoid surrogate
1 / (1 + slope * |v - theta|)^2, and the reset is detached from the graph (as snnTorch does by
default) so gradients flow through the leak only. Needs PyTorch (extra ``train``).
"""

from __future__ import annotations

import copy
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import DataError, EdgeError
from edge.families.torch_common import import_torch

__all__ = [
    "REFERENCE_CONFIG",
    "REFERENCE_ENCODING",
    "REFERENCE_LATENCY_S",
    "REFERENCE_WINDOW_S",
    "SnnConfig",
    "SpikingClassifier",  # noqa: F822  (built on first access by the module __getattr__, torch being optional)
    "build_classifier",
    "layers_of",
    "predict_scores",
    "simulate_numpy",
    "spike_rates",
    "train_snn",
]


def _torch() -> Any:
    return import_torch("training spiking networks")


@dataclass
class SnnConfig:
    """Architecture and training hyper-parameters of the spiking classifier."""

    hidden: tuple[int, ...] = (128,)
    beta: float = 0.9  # initial decay of hidden neurons
    beta_out: float = 0.9  # initial decay of the readout integrator
    threshold: float = 1.0
    slope: float = 10.0  # steepness of the fast-sigmoid surrogate
    learn_beta: bool = True
    learn_threshold: bool = False
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # "cosine" anneals to 0 over the epochs; "constant" keeps lr
    weight_decay: float = 0.0
    dropout: float = 0.0  # on the spikes entering each layer, training only
    rate_weight: float = 0.0  # 0 turns the spike-rate regulariser off
    rate_target: float = 0.05  # mean spikes per neuron and step the regulariser pulls each layer towards
    seed: int = 0
    threads: int | None = None


# The recipe recommended for the 40-class synthetic SSVEP speller: 1 s windows 0.14 s after onset, 6-40 Hz,
# 125 Hz, ON/OFF delta spikes of the 9 occipital channels plus a one-hot clock (18 + 125 inputs, T = 125),
# one hidden layer of 256 LIF neurons. Trained on subjects 1-24 (validation 25-30) it scored 63.6 % on
# held-out subjects 31-35 (chance 2.5 %) in about 9 minutes on 2 CPU cores; without the clock it stays at chance.
REFERENCE_LATENCY_S = 0.14
REFERENCE_WINDOW_S = 1.0
REFERENCE_ENCODING: dict[str, Any] = {
    "encoder": "delta",
    "band_hz": [6.0, 40.0],
    "filter_order": 4,
    "causal": False,
    "downsample": 2,
    "normalise": "per-trial-std",
    "threshold": 0.5,
    "clock_steps": 1,
}
REFERENCE_CONFIG = SnnConfig(
    hidden=(256,), beta=0.5, beta_out=0.9, threshold=1.0, slope=10.0, epochs=30, batch_size=64, lr=1e-2,
    lr_schedule="cosine", dropout=0.2, rate_weight=50.0, rate_target=0.05, seed=0,
)

_BETA_MIN = 1e-3  # keeps a learned beta inside (0, 1]
_THRESHOLD_MIN = 1e-2  # keeps a learned threshold positive


@functools.cache
def _classifier_class() -> type:
    torch = _torch()
    nn = torch.nn

    class _Spike(torch.autograd.Function):
        """Heaviside step forward, fast-sigmoid derivative backward."""

        @staticmethod
        def forward(ctx: Any, distance: Any, slope: float) -> Any:
            ctx.save_for_backward(distance)
            ctx.slope = slope
            return (distance > 0).to(distance.dtype)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, None]:
            (distance,) = ctx.saved_tensors
            return grad / (1.0 + ctx.slope * distance.abs()) ** 2, None

    class SpikingClassifier(nn.Module):
        """Feed-forward LIF layers and a leaky-integrator readout; x [batch, T, features] -> scores [batch, classes]."""

        def __init__(self, inputs: int, classes: int, config: SnnConfig) -> None:
            super().__init__()
            sizes = [inputs, *config.hidden]
            self.slope = float(config.slope)
            self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
            self.betas = nn.ParameterList(
                nn.Parameter(torch.full((n,), float(config.beta)), requires_grad=config.learn_beta)
                for n in config.hidden
            )
            self.thresholds = nn.ParameterList(
                nn.Parameter(torch.full((n,), float(config.threshold)), requires_grad=config.learn_threshold)
                for n in config.hidden
            )
            self.readout = nn.Linear(sizes[-1], classes)
            self.beta_out = nn.Parameter(torch.full((classes,), float(config.beta_out)), requires_grad=config.learn_beta)
            self.dropout = nn.Dropout(config.dropout)
            self.clamp_()

        def clamp_(self) -> None:
            """Keep decays in (0, 1] and thresholds positive (called after every optimiser step)."""
            with torch.no_grad():
                for beta in [*self.betas, self.beta_out]:
                    beta.clamp_(_BETA_MIN, 1.0)
                for theta in self.thresholds:
                    theta.clamp_(min=_THRESHOLD_MIN)

        def run(self, x: Any) -> tuple[Any, list[Any]]:
            """Class scores and each hidden layer's spikes [batch, T, neurons]."""
            spikes: list[Any] = []
            s = x
            for fc, beta, theta in zip(self.fcs, self.betas, self.thresholds, strict=True):
                # Feed-forward: a whole layer's input currents for all steps come from one matmul.
                current = fc(self.dropout(s))
                v = torch.zeros_like(current[:, 0])
                steps = []
                for t in range(current.shape[1]):
                    v = beta * v + current[:, t]
                    z = _Spike.apply(v - theta, self.slope)
                    steps.append(z)
                    v = v * (1.0 - z.detach())
                s = torch.stack(steps, dim=1)
                spikes.append(s)
            drive = self.readout(self.dropout(s))
            u = torch.zeros_like(drive[:, 0])
            total = torch.zeros_like(u)
            for t in range(drive.shape[1]):
                u = self.beta_out * u + drive[:, t]
                total = total + u
            return total / drive.shape[1], spikes

        def forward(self, x: Any) -> Any:
            return self.run(x)[0]

    SpikingClassifier.__module__ = __name__
    return SpikingClassifier


def __getattr__(name: str) -> Any:
    # The class needs torch, which is imported only when someone asks for it.
    if name == "SpikingClassifier":
        return _classifier_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_classifier(inputs: int, classes: int, config: SnnConfig) -> Any:
    """A freshly initialised SpikingClassifier (seed it with torch.manual_seed for repeatable weights)."""
    return _classifier_class()(inputs, classes, config)


def _check_config(config: SnnConfig) -> None:
    problems = []
    if not config.hidden or any(int(n) < 1 for n in config.hidden):
        problems.append(f"'hidden' must list at least one layer size >= 1; got {config.hidden}")
    for name in ("beta", "beta_out"):
        if not 0 < getattr(config, name) <= 1:
            problems.append(f"'{name}' must be in (0, 1]; got {getattr(config, name)}")
    for name in ("epochs", "batch_size"):
        if int(getattr(config, name)) < 1:
            problems.append(f"'{name}' must be >= 1; got {getattr(config, name)}")
    if config.lr_schedule not in ("cosine", "constant"):
        problems.append(f"'lr_schedule' must be 'cosine' or 'constant'; got {config.lr_schedule!r}")
    if not 0 <= config.dropout < 1:
        problems.append(f"'dropout' must be in [0, 1); got {config.dropout}")
    if problems:
        raise EdgeError(f"The SnnConfig parameter {problems[0]}.")


def _check_xy(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 3:
        raise DataError(f"{what} spikes must be shaped [trials, time steps, features]; got shape {x.shape}.")
    if len(x) != len(y):
        raise DataError(f"{what} has {len(x)} trials but {len(y)} labels.")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"{what} labels must be integers from 0; got dtype {y.dtype}.")
    return x, y.astype(np.int64)


def train_snn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    config: SnnConfig,
    *,
    classes: int | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train a SpikingClassifier with Adam on [trials, T, features] spikes; returns the best-validation model and history.

    Cross-entropy on the mean readout, plus ``rate_weight`` * sum over hidden layers of
    (mean spike rate - ``rate_target``)^2 when ``rate_weight`` > 0. Without validation data the last
    epoch is kept. The same seed gives the same model.
    """
    torch = _torch()
    _check_config(config)
    x_train, y_train = _check_xy(x_train, y_train, "the training set")
    if x_val is not None:
        x_val, y_val = _check_xy(x_val, y_val, "the validation set")
    classes = classes or int(max(y_train.max(), -1 if y_val is None else y_val.max())) + 1
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = build_classifier(x_train.shape[2], classes, config)
    optimiser = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.epochs)
                if config.lr_schedule == "cosine" else None)
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(config.seed)
    history: dict[str, Any] = {"train_loss": [], "train_accuracy": [], "val_accuracy": [], "spike_rate": [],
                               "best_epoch": 0, "seconds": 0.0}
    best_accuracy, best_state = -1.0, None
    start_time = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        loss_sum, correct, rates = 0.0, 0, np.zeros(len(config.hidden))
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            scores, spikes = model.run(inputs[idx])
            loss = torch.nn.functional.cross_entropy(scores, targets[idx])
            layer_rates = torch.stack([s.mean() for s in spikes])
            if config.rate_weight > 0:
                loss = loss + config.rate_weight * ((layer_rates - config.rate_target) ** 2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            model.clamp_()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((scores.argmax(1) == targets[idx]).sum())
            rates += layer_rates.detach().numpy() * len(idx)
        if schedule is not None:
            schedule.step()
        history["train_loss"].append(loss_sum / len(inputs))
        history["train_accuracy"].append(correct / len(inputs))
        history["spike_rate"].append((rates / len(inputs)).tolist())
        if x_val is not None:
            accuracy = float(np.mean(predict_scores(model, x_val).argmax(1) == y_val))
            history["val_accuracy"].append(accuracy)
            if accuracy > best_accuracy:
                best_accuracy, best_state = accuracy, copy.deepcopy(model.state_dict())
                history["best_epoch"] = epoch
        else:
            history["best_epoch"] = epoch
        if on_epoch is not None:
            on_epoch(epoch, history)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["seconds"] = time.perf_counter() - start_time
    return model, history


def predict_scores(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class scores [trials, classes] of the model in evaluation mode."""
    torch = _torch()
    model.eval()
    with torch.no_grad():
        parts = [model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))).numpy()
                 for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def spike_rates(model: Any, x: np.ndarray, batch_size: int = 256) -> list[float]:
    """Mean spikes per neuron and step of each hidden layer on x [trials, T, features]."""
    torch = _torch()
    model.eval()
    totals = np.zeros(len(model.fcs))
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            _, spikes = model.run(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)))
            totals += [float(s.sum()) / (s.shape[1] * s.shape[2]) for s in spikes]
    return (totals / len(x)).tolist()


def layers_of(model: Any) -> list[dict[str, Any]]:
    """The model as plain float32 numpy layers: one ``lif`` dict per hidden layer, then the ``li`` readout."""
    def array(t: Any) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32).copy()

    layers: list[dict[str, Any]] = [
        {"kind": "lif", "weight": array(fc.weight), "bias": array(fc.bias), "beta": array(beta), "threshold": array(theta)}
        for fc, beta, theta in zip(model.fcs, model.betas, model.thresholds, strict=True)
    ]
    layers.append({"kind": "li", "weight": array(model.readout.weight), "bias": array(model.readout.bias),
                   "beta": array(model.beta_out)})
    return layers


def simulate_numpy(layers: list[dict[str, Any]], x: np.ndarray) -> np.ndarray:
    """Class scores [batch, classes] of ``layers`` on spikes x [batch, T, features], in float32 numpy."""
    s = np.asarray(x, dtype=np.float32)
    if s.ndim != 3:
        raise DataError(f"simulate_numpy needs spikes shaped [batch, time steps, features]; got shape {s.shape}.")
    if not layers or layers[-1]["kind"] != "li" or any(layer["kind"] != "lif" for layer in layers[:-1]):
        raise DataError("simulate_numpy needs lif layers followed by one li readout layer.")
    steps = s.shape[1]
    for layer in layers[:-1]:
        current = s @ layer["weight"].T + layer["bias"]
        v = np.zeros_like(current[:, 0])
        out = np.zeros_like(current)
        for t in range(steps):
            v = layer["beta"] * v + current[:, t]
            z = v > layer["threshold"]
            out[:, t] = z
            v = np.where(z, np.float32(0), v)
        s = out
    readout = layers[-1]
    drive = s @ readout["weight"].T + readout["bias"]
    u = np.zeros_like(drive[:, 0])
    total = np.zeros_like(u)
    for t in range(steps):
        u = readout["beta"] * u + drive[:, t]
        total = total + u
    return total / np.float32(steps)
