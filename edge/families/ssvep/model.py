"""The SSVEP DNN of Guney, Oblokulov and Ozkan (IEEE TBME 2022), layer for layer as ``main.m``.

Input is NCHW = (batch, sub-bands, EEG channels, time samples); ReLU after time conv 1 is the only
non-linearity, and dropout sits before it as in the MATLAB code. Needs PyTorch (extra ``train``).
"""

from __future__ import annotations

import warnings
from typing import Any

from edge.families.torch_common import import_torch

# PyTorch warns that even-kernel 'same' padding copies the input; that is the layer as published.
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")


def _torch() -> Any:
    return import_torch("training and exporting the SSVEP network")


def build_guney_net(
    channels: int = 9,
    samples: int = 100,
    sub_bands: int = 3,
    classes: int = 40,
    spatial_filters: int = 120,
    dropout: tuple[float, float, float] = (0.1, 0.1, 0.95),
) -> Any:
    """A freshly initialised Guney network (sub-band conv all ones, N(0, 0.01) elsewhere)."""
    torch = _torch()
    nn = torch.nn

    class GuneyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sub_band = nn.Conv2d(sub_bands, 1, (1, 1), bias=False)
            self.channel = nn.Conv2d(1, spatial_filters, (channels, 1))
            self.drop1 = nn.Dropout(dropout[0])
            self.time1 = nn.Conv2d(spatial_filters, spatial_filters, (1, 2), stride=(1, 2))
            self.drop2 = nn.Dropout(dropout[1])
            # 'same' with an even kernel pads 4 left and 5 right in both MATLAB and PyTorch (ONNX SAME_UPPER).
            self.time2 = nn.Conv2d(spatial_filters, spatial_filters, (1, 10), padding="same")
            self.drop3 = nn.Dropout(dropout[2])
            self.fc = nn.Linear(spatial_filters * (samples // 2), classes)

        def forward(self, x: Any) -> Any:
            x = self.sub_band(x)
            x = self.drop1(self.channel(x))
            x = torch.relu(self.drop2(self.time1(x)))
            x = self.drop3(self.time2(x))
            return self.fc(torch.flatten(x, 1))

        def set_dropout(self, first_two: float, last: float) -> None:
            """Change dropout rates (stage 2 of training raises the first two)."""
            self.drop1.p = self.drop2.p = first_two
            self.drop3.p = last

    net = GuneyNet()
    with torch.no_grad():
        net.sub_band.weight.fill_(1.0)
        for layer in (net.channel, net.time1, net.time2, net.fc):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.zeros_(layer.bias)
    return net
