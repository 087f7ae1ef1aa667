"""Compact EEG classifiers for the edge: EEGNet (and Q-EEGNet), Shallow ConvNet, EEG-TCNet.

Every network takes (batch, 1, channels, samples) float32 and returns class logits (no softmax).
The layers follow the Keras references of bci.md §5 (arl-eegmodels, iis-eth-zurich/eeg-tcnet):
Keras batch-norm defaults (eps 1e-3, momentum 0.99, i.e. PyTorch momentum 0.01) unless the
reference sets others, and Keras 'same' padding (the odd sample goes to the right, as in PyTorch).

Max-norm constraints are not part of ``forward``: ``torch.renorm`` there breaks the ONNX exporter.
Each network lists them in ``net.max_norm`` (sub-module name -> largest L2 norm of one output
unit's weights) and :func:`apply_max_norm` enforces them after every optimiser step, which is what
Keras does with ``kernel_constraint``. Needs PyTorch (extra ``train``).
"""

from __future__ import annotations

import warnings
from typing import Any

from edge.families.torch_common import import_torch

# PyTorch warns that even-kernel 'same' padding copies the input; that is the layer as published.
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")

ACTIVATIONS = ("elu", "relu")


def _torch() -> Any:
    return import_torch("training and exporting EEG classifiers")


def _check(owner: str, name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"The '{name}' parameter of {owner} must be an integer >= {minimum}; got {value!r}.")


def _activation(torch: Any, owner: str, name: str) -> Any:
    if name not in ACTIVATIONS:
        raise ValueError(f"The 'activation' parameter of {owner} must be one of {', '.join(ACTIVATIONS)}; got {name!r}.")
    return torch.nn.ELU() if name == "elu" else torch.nn.ReLU()


def build_eegnet(
    channels: int,
    samples: int,
    classes: int,
    F1: int = 8,  # noqa: N803 (the paper's names)
    D: int = 2,  # noqa: N803
    F2: int = 16,  # noqa: N803
    kern_length: int = 64,
    pool: tuple[int, int] = (4, 8),
    dropout: float = 0.5,
    activation: str = "elu",
    separable_length: int = 16,
) -> Any:
    """EEGNet-F1,D of Lawhern et al. (2018), layer for layer as arl-eegmodels ``EEGNet``.

    temporal conv (1, kern_length) 'same' -> BN -> depthwise spatial conv (channels, 1) x D
    [max-norm 1] -> BN -> act -> avg-pool (1, pool[0]) -> dropout -> separable conv (1, 16) 'same'
    -> BN -> act -> avg-pool (1, pool[1]) -> dropout -> flatten -> dense [max-norm 0.25].
    Use kern_length ~ sample_rate / 2 (64 at 128 Hz, 80 at 160 Hz).
    """
    torch = _torch()
    nn = torch.nn
    owner = "build_eegnet"
    for name, value, low in (("channels", channels, 1), ("classes", classes, 2), ("F1", F1, 1), ("D", D, 1),
                             ("F2", F2, 1), ("kern_length", kern_length, 1), ("separable_length", separable_length, 1)):
        _check(owner, name, value, low)
    _check(owner, "samples", samples, pool[0] * pool[1])
    _activation(torch, owner, activation)  # refuse an unknown name before building
    features = F2 * ((samples // pool[0]) // pool[1])

    class EEGNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.temporal = nn.Conv2d(1, F1, (1, kern_length), padding="same", bias=False)
            self.bn1 = nn.BatchNorm2d(F1, eps=1e-3, momentum=0.01)
            self.spatial = nn.Conv2d(F1, F1 * D, (channels, 1), groups=F1, bias=False)
            self.bn2 = nn.BatchNorm2d(F1 * D, eps=1e-3, momentum=0.01)
            self.act1 = _activation(torch, owner, activation)
            self.pool1 = nn.AvgPool2d((1, pool[0]))
            self.drop1 = nn.Dropout(dropout)
            self.separable_depth = nn.Conv2d(F1 * D, F1 * D, (1, separable_length), padding="same", groups=F1 * D,
                                             bias=False)
            self.separable_point = nn.Conv2d(F1 * D, F2, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(F2, eps=1e-3, momentum=0.01)
            self.act2 = _activation(torch, owner, activation)
            self.pool2 = nn.AvgPool2d((1, pool[1]))
            self.drop2 = nn.Dropout(dropout)
            self.flatten = nn.Flatten()
            self.classifier = nn.Linear(features, classes)
            self.max_norm = {"spatial": 1.0, "classifier": 0.25}

        def forward(self, x: Any) -> Any:
            x = self.bn1(self.temporal(x))
            x = self.drop1(self.pool1(self.act1(self.bn2(self.spatial(x)))))
            x = self.separable_point(self.separable_depth(x))
            x = self.drop2(self.pool2(self.act2(self.bn3(x))))
            return self.classifier(self.flatten(x))

    return EEGNet()


def build_qeegnet(
    channels: int = 22,
    samples: int = 1125,
    classes: int = 4,
    kern_length: int = 64,
    dropout: float = 0.5,
    activation: str = "elu",
) -> Any:
    """Q-EEGNet (Schneider et al. 2020): EEGNet-8,2 for 250 Hz input with pooling 8 and 8.

    At C=22, T=1125 it has 2,548 parameters (16 x 17 features into the dense layer). bci.md §5.1
    quotes 3,700 for T=1120; that is the count with pooling 4 and 8 (16 x 35 features), not 8 and 8.
    Two details of xiaywang/q-eegnet_torch are not copied: it pads the temporal conv 32 left / 31
    right (Keras and this port: 31 / 32) and clamps each weight to +-1 / +-0.25 instead of Keras'
    per-unit max-norm.
    """
    return build_eegnet(channels, samples, classes, kern_length=kern_length, pool=(8, 8), dropout=dropout,
                        activation=activation)


def build_shallow_convnet(
    channels: int,
    samples: int,
    classes: int,
    filters: int = 40,
    kern_length: int = 25,
    pool: int = 75,
    stride: int = 15,
    dropout: float = 0.5,
) -> Any:
    """Shallow ConvNet of Schirrmeister et al. (2017) with the original 250 Hz values.

    temporal conv (1, 25) with bias [max-norm 2] -> spatial conv (channels, 1) no bias [max-norm 2]
    -> BN (eps 1e-5, Keras momentum 0.9) -> square -> avg-pool (1, 75) stride 15 -> log
    (input clipped to [1e-7, 1e4] as Keras does) -> dropout -> dense [max-norm 0.5].
    At 128 Hz arl-eegmodels uses kern_length 13, pool 35, stride 7.
    """
    torch = _torch()
    nn = torch.nn
    owner = "build_shallow_convnet"
    for name, value, low in (("channels", channels, 1), ("classes", classes, 2), ("filters", filters, 1),
                             ("kern_length", kern_length, 1), ("pool", pool, 1), ("stride", stride, 1)):
        _check(owner, name, value, low)
    _check(owner, "samples", samples, kern_length + pool - 1)
    steps = (samples - kern_length + 1 - pool) // stride + 1

    class ShallowConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.temporal = nn.Conv2d(1, filters, (1, kern_length))
            self.spatial = nn.Conv2d(filters, filters, (channels, 1), bias=False)
            self.bn = nn.BatchNorm2d(filters, eps=1e-5, momentum=0.1)
            self.pool = nn.AvgPool2d((1, pool), stride=(1, stride))
            self.drop = nn.Dropout(dropout)
            self.flatten = nn.Flatten()
            self.classifier = nn.Linear(filters * steps, classes)
            self.max_norm = {"temporal": 2.0, "spatial": 2.0, "classifier": 0.5}

        def forward(self, x: Any) -> Any:
            x = self.bn(self.spatial(self.temporal(x)))
            x = torch.log(torch.clamp(self.pool(x * x), 1e-7, 1e4))
            return self.classifier(self.flatten(self.drop(x)))

    return ShallowConvNet()


def build_eeg_tcnet(
    channels: int,
    samples: int,
    classes: int,
    F1: int = 8,  # noqa: N803 (the paper's names)
    D: int = 2,  # noqa: N803
    KE: int = 32,  # noqa: N803
    KT: int = 4,  # noqa: N803
    L: int = 2,  # noqa: N803
    FT: int = 12,  # noqa: N803
    pe: float = 0.2,
    pt: float = 0.3,
    activation: str = "elu",
) -> Any:
    """EEG-TCNet of Ingolfsson et al. (2020), as ``EEGTCNet`` in iis-eth-zurich/eeg-tcnet.

    EEGNet front end (temporal conv KE 'same', depthwise x D [max-norm 1], pools 8 and 8, separable
    conv 16, dropout pe), then L residual blocks of two causal dilated Conv1d(FT, KT) -> BN -> act
    -> dropout pt (dilation 2**i, biases as Keras' default; a 1x1 conv on the first skip when
    F1*D != FT), and a dense layer [max-norm 0.25] on the last time step.
    """
    torch = _torch()
    nn = torch.nn
    owner = "build_eeg_tcnet"
    for name, value, low in (("channels", channels, 1), ("classes", classes, 2), ("F1", F1, 1), ("D", D, 1),
                             ("KE", KE, 1), ("KT", KT, 1), ("L", L, 1), ("FT", FT, 1)):
        _check(owner, name, value, low)
    _check(owner, "samples", samples, 64)
    F2 = F1 * D  # noqa: N806

    class CausalBlock(nn.Module):
        """Two causal dilated convolutions with a residual connection, as Conv2d over (1, time)."""

        def __init__(self, width: int, dilation: int) -> None:
            super().__init__()
            # Causal padding: pad (KT-1)*dilation on both sides, then drop as many outputs at the end.
            # This exports as Conv + Slice with constant bounds; an explicit left pad exports as a
            # chain of a dozen shape ops in front of every Pad.
            self.trim = (KT - 1) * dilation
            self.conv1 = nn.Conv2d(width, FT, (1, KT), dilation=(1, dilation), padding=(0, self.trim))
            self.bn1 = nn.BatchNorm2d(FT, eps=1e-3, momentum=0.01)
            self.act1 = _activation(torch, owner, activation)
            self.drop1 = nn.Dropout(pt)
            self.conv2 = nn.Conv2d(FT, FT, (1, KT), dilation=(1, dilation), padding=(0, self.trim))
            self.bn2 = nn.BatchNorm2d(FT, eps=1e-3, momentum=0.01)
            self.act2 = _activation(torch, owner, activation)
            self.drop2 = nn.Dropout(pt)
            self.skip = nn.Conv2d(width, FT, 1) if width != FT else None
            self.out = _activation(torch, owner, activation)
            for conv in (self.conv1, self.conv2):  # Keras kernel_initializer='he_uniform'
                nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)

        def causal(self, y: Any) -> Any:
            return y[:, :, :, : -self.trim] if self.trim else y

        def forward(self, x: Any) -> Any:
            y = self.drop1(self.act1(self.bn1(self.causal(self.conv1(x)))))
            y = self.drop2(self.act2(self.bn2(self.causal(self.conv2(y)))))
            return self.out(y + (x if self.skip is None else self.skip(x)))

    class EEGTCNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.temporal = nn.Conv2d(1, F1, (1, KE), padding="same", bias=False)
            self.bn1 = nn.BatchNorm2d(F1, eps=1e-3, momentum=0.01)
            self.spatial = nn.Conv2d(F1, F2, (channels, 1), groups=F1, bias=False)
            self.bn2 = nn.BatchNorm2d(F2, eps=1e-3, momentum=0.01)
            self.act1 = _activation(torch, owner, activation)
            self.pool1 = nn.AvgPool2d((1, 8))
            self.drop1 = nn.Dropout(pe)
            self.separable_depth = nn.Conv2d(F2, F2, (1, 16), padding="same", groups=F2, bias=False)
            self.separable_point = nn.Conv2d(F2, F2, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(F2, eps=1e-3, momentum=0.01)
            self.act2 = _activation(torch, owner, activation)
            self.pool2 = nn.AvgPool2d((1, 8))
            self.drop2 = nn.Dropout(pe)
            self.tcn = nn.ModuleList(CausalBlock(F2 if i == 0 else FT, 2**i) for i in range(L))
            self.flatten = nn.Flatten()
            self.classifier = nn.Linear(FT, classes)
            self.max_norm = {"spatial": 1.0, "classifier": 0.25}

        def forward(self, x: Any) -> Any:
            x = self.bn1(self.temporal(x))
            x = self.drop1(self.pool1(self.act1(self.bn2(self.spatial(x)))))
            x = self.separable_point(self.separable_depth(x))
            x = self.drop2(self.pool2(self.act2(self.bn3(x))))
            for block in self.tcn:  # stays 4-D (batch, filters, 1, time): no Squeeze/If in the ONNX graph
                x = block(x)
            return self.classifier(self.flatten(x[:, :, :, -1:]))

    return EEGTCNet()


def apply_max_norm(net: Any) -> None:
    """Rescale each output unit's weights to the L2 norm limits in ``net.max_norm`` (Keras MaxNorm)."""
    torch = _torch()
    limits = getattr(net, "max_norm", {})
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name, limit in limits.items():
            weight = modules[name].weight
            # Dim 0 is the output unit for Conv (out, in/groups, kh, kw) and Linear (out, in) alike.
            weight.copy_(torch.renorm(weight, 2, 0, limit))


def count_parameters(net: Any) -> int:
    """Trainable parameters (batch-norm running statistics are buffers and not counted, as in Keras)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
