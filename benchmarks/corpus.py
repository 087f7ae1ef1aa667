"""The conformance corpus: architectures users bring, built in PyTorch with seeded weights, exported to ONNX.

No downloads: every network is defined here (the MLPerf Tiny four, a GRU and an LSTM classifier) or taken from
torchvision's model definitions with ``weights=None``. BatchNorm layers get random affine parameters and running
statistics measured on random data (cumulative average over a few train-mode passes), so folding them into the
convolutions is exercised with non-trivial values. Each network is exported with a static batch of 1 or a dynamic
batch axis, at opset 13 (TorchScript exporter) or 18 (torch.export-based exporter, falling back to TorchScript
when it fails; the fallback is recorded in the export note).

Weights are ``"random"`` (seeded initialisation) or ``"trained"`` (the default of the table): a few dozen seeded Adam
steps on a synthetic labelled task of the network's input shape and class count (one smooth random template per
class plus unit Gaussian noise; the autoencoder reconstructs such inputs). Random deep nets give nearly tied logits,
so a 1-step int8 difference flips top-1; deployed models have decisive ones, and so do these after the brief training.
Calibration and held-out inputs of trained weights come from the same synthetic distribution.

>>> from benchmarks.corpus import ARCHITECTURES, export_onnx
>>> note = export_onnx(ARCHITECTURES["ds-cnn"], "ds.onnx", opset=13, dynamic=False, weights="trained")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import sys
import tempfile
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger("edge")

#: Seed of the weights, of the BatchNorm statistics' data and (offset) of the calibration and held-out inputs.
SEED = 0
#: Spatial size the torchvision networks are built for (224 in their papers; smaller keeps the table fast).
TORCHVISION_SIZE = 64
#: Classes of the torchvision networks' classifier (1000 in ImageNet; 10 keeps the last layer small).
TORCHVISION_CLASSES = 10
WEIGHTS = ("trained", "random")
#: Brief training: Adam steps, batch, learning rate; the noise around each class template (templates have unit std).
TRAINING_STEPS, TRAINING_BATCH, TRAINING_RATE, TASK_NOISE = 32, 24, 3e-3, 1.0
#: Learning rates that differ: squeezenet (no BatchNorm) ends with a dead ReLU, all outputs 0, at 3e-3.
TRAINING_RATES = {"squeezenet1_1": 3e-4}
#: Modes (templates) of the autoencoder's synthetic data; it has no classes.
AUTOENCODER_MODES = 8


@dataclass(frozen=True)
class Architecture:
    """One corpus network: how to build it, its input shape (batch excluded) and what its output means."""

    name: str
    build: Callable[[], object]
    input_shape: tuple[int, ...]
    size_note: str
    task: str = "classifier"  # "classifier" (top-1 is meaningful) or "autoencoder" (a reconstruction)


# -- MLPerf Tiny ----------------------------------------------------------------------------------------------


def _ds_cnn():
    """DS-CNN (small) for keyword spotting: a 10x4 stride-2 conv, four depthwise-separable blocks, 12 classes."""
    import torch.nn as nn

    layers: list[nn.Module] = [nn.Conv2d(1, 64, (10, 4), stride=(2, 2), padding=(5, 1)), nn.BatchNorm2d(64), nn.ReLU()]
    for _ in range(4):
        layers += [nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64), nn.ReLU(),
                   nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 12)]
    return nn.Sequential(*layers)


def _resnet8():
    """ResNet-8 for CIFAR-10: a 16-filter stem and three residual stacks (16, 32, 64 filters), 10 classes."""
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU(),
                                      nn.Conv2d(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out))
            self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.shortcut(x))

    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                         Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _mobilenet_v1_025():
    """MobileNetV1 with width multiplier 0.25 for visual wake words (96x96 RGB, 2 classes)."""
    import torch.nn as nn

    def separable(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in), nn.BatchNorm2d(c_in), nn.ReLU(),
                nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU()]

    plan = [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)] + [(128, 128, 1)] * 5 + [
        (128, 256, 2), (256, 256, 1)]
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU()]
    for c_in, c_out, stride in plan:
        layers += separable(c_in, c_out, stride)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 2)]
    return nn.Sequential(*layers)


def _fc_autoencoder():
    """The anomaly-detection FC autoencoder: 640 -> 4x128 -> 8 -> 4x128 -> 640, BatchNorm and ReLU between."""
    import torch.nn as nn

    widths = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out), nn.ReLU()]
    layers.append(nn.Linear(128, 640))
    return nn.Sequential(*layers)


# -- recurrent classifiers ------------------------------------------------------------------------------------


def _recurrent(kind: str):
    """A keyword classifier over 49 MFCC frames of 10 coefficients: one GRU or LSTM layer (64), the last step, 12 classes."""
    import torch
    import torch.nn as nn

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(10, 64, batch_first=True)
            self.head = nn.Linear(64, 12)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    return Recurrent()


# -- torchvision ----------------------------------------------------------------------------------------------


def torchvision_models() -> types.ModuleType:
    """``torchvision.models``, loaded without torchvision's compiled ops when they do not load.

    The torchvision 0.28.0 wheel on PyPI is built against CUDA torch; with the CPU build of torch 2.13 its
    ``__init__`` fails registering ``torchvision::nms``. The model definitions are pure Python, so they are
    imported from the package folder with an empty package module in place of that ``__init__``.
    """
    try:
        import torchvision.models as models

        return models
    except (ImportError, RuntimeError, OSError) as exc:
        log.debug("torchvision's own import failed (%s); loading the model definitions alone", exc)
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the conformance corpus needs torchvision's model definitions: pip install torchvision==0.28.0")
    package = types.ModuleType("torchvision")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["torchvision"] = package
    import torchvision.models as models

    return models


def _torchvision(name: str) -> Callable[[], object]:
    def build():
        return getattr(torchvision_models(), name)(weights=None, num_classes=TORCHVISION_CLASSES)

    build.__doc__ = f"torchvision's {name} (weights=None, {TORCHVISION_CLASSES} classes)."
    return build


_TV = f"{TORCHVISION_SIZE}x{TORCHVISION_SIZE} RGB, {TORCHVISION_CLASSES} classes"  # ImageNet: 224x224, 1000
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in [
    Architecture("ds-cnn", _ds_cnn, (1, 49, 10), "49x10 MFCC, 12 classes"),
    Architecture("resnet-8", _resnet8, (3, 32, 32), "32x32 RGB, 10 classes"),
    Architecture("mobilenet-v1-0.25", _mobilenet_v1_025, (3, 96, 96), "96x96 RGB, 2 classes"),
    Architecture("fc-autoencoder", _fc_autoencoder, (640,), "640 features", task="autoencoder"),
    *[Architecture(name, _torchvision(name), (3, TORCHVISION_SIZE, TORCHVISION_SIZE), _TV) for name in (
        "mobilenet_v2", "mobilenet_v3_small", "resnet18", "squeezenet1_1", "shufflenet_v2_x0_5", "efficientnet_b0",
        "mnasnet0_5")],
    Architecture("gru-classifier", lambda: _recurrent("gru"), (49, 10), "49 frames x 10 MFCC, 12 classes"),
    Architecture("lstm-classifier", lambda: _recurrent("lstm"), (49, 10), "49 frames x 10 MFCC, 12 classes"),
]}


def build_model(architecture: Architecture, seed: int = SEED):
    """The network in eval mode with seeded random weights and non-trivial BatchNorm parameters and statistics."""
    import torch

    torch.manual_seed(seed)
    model = architecture.build()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=generator))
            norm.bias.copy_(0.2 * torch.randn(norm.bias.shape, generator=generator))
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: the statistics of exactly the passes below
        if norms:
            model.train()
            for _ in range(4):
                model(torch.randn((16, *architecture.input_shape), generator=generator))
    return model.eval()


def random_inputs(architecture: Architecture, count: int, seed: int) -> np.ndarray:
    """``count`` inputs drawn from a standard normal distribution, float32, in the model's input layout."""
    return np.random.default_rng(seed).standard_normal((count, *architecture.input_shape)).astype(np.float32)


def synthetic_task(architecture: Architecture, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` labelled inputs of the synthetic task: a class template plus Gaussian noise (float32, int64 labels).

    The templates depend only on the architecture (seeded by ``SEED``), the labels and the noise on ``seed``, so
    training, calibration and held-out data are draws from one distribution.
    """
    templates = _templates(architecture)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(templates), count)
    noise = rng.standard_normal((count, *architecture.input_shape))
    return (templates[labels] + TASK_NOISE * noise).astype(np.float32), labels.astype(np.int64)


def task_inputs(architecture: Architecture, count: int, seed: int, weights: str) -> np.ndarray:
    """Inputs for calibration or held-out measurement: N(0, 1) for random weights, the synthetic task for trained."""
    _check_weights(weights)
    if weights == "random":
        return random_inputs(architecture, count, seed)
    return synthetic_task(architecture, count, seed)[0]


def float_task_score(architecture: Architecture, weights: str, count: int, seed: int) -> float:
    """The float model on held-out synthetic data: top-1 accuracy (autoencoder: relative reconstruction error)."""
    import torch

    x, labels = synthetic_task(architecture, count, seed)
    with torch.no_grad():
        output = corpus_model(architecture, weights)(torch.from_numpy(x)).numpy().astype(np.float64)
    if architecture.task == "autoencoder":
        return float(np.linalg.norm(output - x) / np.linalg.norm(x))
    return float(np.mean(output.argmax(1) == labels))


def class_count(architecture: Architecture) -> int:
    """Classes of the synthetic task: the classifier's output width, or the autoencoder's modes."""
    if architecture.task == "autoencoder":
        return AUTOENCODER_MODES
    return _class_counts(architecture.name)


@functools.cache
def _class_counts(name: str) -> int:
    import torch

    architecture = ARCHITECTURES[name]
    with torch.no_grad():
        return int(build_model(architecture)(torch.zeros((1, *architecture.input_shape))).shape[-1])


@functools.cache
def _template_cache(name: str) -> np.ndarray:
    import torch
    import torch.nn.functional as functional

    architecture = ARCHITECTURES[name]
    classes, shape = class_count(architecture), architecture.input_shape
    rng = np.random.default_rng(SEED + 7)
    # smooth templates: coarse random grids interpolated to the input size (an image texture, a spectro-temporal
    # pattern, a smooth feature profile), so a small receptive field or a pooled feature sees the class
    if len(shape) == 3:  # channels, height, width
        coarse = torch.from_numpy(rng.standard_normal((classes, shape[0], 4, 4)))
        smooth = functional.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=True)
    elif len(shape) == 2:  # frames, features
        coarse = torch.from_numpy(rng.standard_normal((classes, shape[1], 6)))
        smooth = functional.interpolate(coarse, size=shape[0], mode="linear", align_corners=True).transpose(1, 2)
    else:  # features
        coarse = torch.from_numpy(rng.standard_normal((classes, 1, 16)))
        smooth = functional.interpolate(coarse, size=shape[0], mode="linear", align_corners=True)[:, 0]
    smooth = smooth.numpy()
    flat = smooth.reshape(classes, -1)
    return ((flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)).reshape(smooth.shape)


def _templates(architecture: Architecture) -> np.ndarray:
    return _template_cache(architecture.name)


def corpus_model(architecture: Architecture, weights: str, seed: int = SEED):
    """The network in eval mode with random (``build_model``) or briefly trained weights (trained once, then reused)."""
    _check_weights(weights)
    if weights == "random":
        return build_model(architecture, seed)
    model = architecture.build()
    model.load_state_dict(_trained_state(architecture.name, seed))
    return model.eval()


def _check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got '{weights}'")


@functools.cache
def _trained_state(name: str, seed: int) -> dict:
    """The state dict after the brief training, cached so the four exports of one architecture share it."""
    import torch

    architecture = ARCHITECTURES[name]
    model = build_model(architecture, seed)
    torch.manual_seed(seed)  # dropout masks
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAINING_RATES.get(name, TRAINING_RATE))
    model.train()
    with torch.enable_grad():  # callers (an inference harness, a test session) may have turned gradients off
        for step in range(TRAINING_STEPS):
            x, labels = synthetic_task(architecture, TRAINING_BATCH, seed + 1000 + step)
            output = model(torch.from_numpy(x))
            if architecture.task == "autoencoder":
                loss = torch.nn.functional.mse_loss(output, torch.from_numpy(x))
            else:
                loss = torch.nn.functional.cross_entropy(output, torch.from_numpy(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():  # running statistics of the trained weights on the task's data, not the moving average
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
        for step in range(4 if norms else 0):
            model(torch.from_numpy(synthetic_task(architecture, TRAINING_BATCH, seed + 2000 + step)[0]))
    model.eval()
    with torch.no_grad():  # a dead network (the same output for every input) would make every row pass vacuously
        probe = model(torch.from_numpy(synthetic_task(architecture, TRAINING_BATCH, seed + 3000)[0]))
    if float(probe.max() - probe.min()) == 0:
        raise RuntimeError(f"the briefly trained {name} gives the same output for every input (a dead network)")
    return copy.deepcopy(model.state_dict())  # a deep copy keeps the metadata (mnasnet's loader reads its version)


def export_onnx(architecture: Architecture, path: str | Path, *, opset: int, dynamic: bool, seed: int = SEED,
                weights: str = "random") -> str:
    """Write the network as one self-contained ONNX file; returns a note on how it was exported.

    Opset 13 uses the TorchScript exporter (``dynamo=False``); opset 18 tries the torch.export-based one first
    and falls back to TorchScript when it fails (the note says so). The input is named ``input``, the output
    ``output``; ``dynamic`` makes their first axis a symbolic ``batch``; ``weights`` is "random" or "trained".
    """
    import torch

    model = corpus_model(architecture, weights, seed)
    path = Path(path)
    exporters = ["dynamo", "torchscript"] if opset >= 18 else ["torchscript"]
    failures = []
    for exporter in exporters:
        # torch.export specialises a size-1 axis to a constant, so a dynamic export traces a batch of 2
        sample = torch.randn((2 if dynamic else 1, *architecture.input_shape), generator=torch.Generator().manual_seed(seed))
        try:
            onnx_model = _export(model, sample, opset, dynamic, exporter)
        except Exception as exc:  # any exporter failure is a finding for the note, then the fallback is tried
            failures.append(f"{exporter} export failed ({type(exc).__name__}: {_first_line(exc)})")
            continue
        _write_atomic(onnx_model, path)
        return "; ".join([*failures, exporter])
    raise RuntimeError(f"{architecture.name}: no exporter worked: {'; '.join(failures)}")


def _export(model, sample, opset: int, dynamic: bool, exporter: str) -> onnx.ModelProto:
    """The exported ModelProto with every weight embedded."""
    import torch

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = Path(folder) / "model.onnx"
        names = {"input_names": ["input"], "output_names": ["output"]}
        if exporter == "dynamo":
            shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
            program = torch.onnx.export(model, (sample,), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                        verbose=False, **names)
            program.save(str(target), external_data=False)
        else:
            axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
            torch.onnx.export(model, (sample,), str(target), dynamo=False, opset_version=opset, dynamic_axes=axes,
                              **names)
        onnx_model = onnx.load(str(target), load_external_data=True)
    onnx.checker.check_model(onnx_model)
    return onnx_model


def _write_atomic(model: onnx.ModelProto, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(temporary))
    temporary.replace(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
