"""Static int8 post-training quantization with ``onnxruntime.quantization`` (QDQ format).

Weights are int8 (per output channel by default), activations int8 with ranges calibrated on real
trials. Nodes named in ``exclude`` stay in float: for the Guney SSVEP network keeping the
3-weight sub-band combination layer in float recovers most of what plain int8 loses (DESIGN.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edge.artifact import Artifact
from edge.errors import PassError

log = logging.getLogger("edge")

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QuantizeInt8:
    """Parameters of the static int8 quantization pass."""

    per_channel: bool = True
    calibrate: str = "minmax"
    exclude: list[str] = field(default_factory=list)
    calibration_trials: int = 256
    name: str = "quantize-int8"

    def __post_init__(self) -> None:
        if self.calibrate not in CALIBRATION_METHODS:
            raise PassError(
                f"The 'calibrate' parameter of {self.name} must be one of {', '.join(CALIBRATION_METHODS)}; "
                f"got '{self.calibrate}'."
            )
        if self.calibration_trials < 1:
            raise PassError(f"The 'calibration_trials' parameter of {self.name} must be >= 1; got {self.calibration_trials}.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None) -> Artifact:
        """Quantize ``artifact`` using ``calibration`` trials in its input layout."""
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if calibration is None or len(calibration) == 0:
            raise PassError(f"{self.name} needs calibration data; pass --calib DATASPEC.")
        names = {n.name for n in artifact.model.graph.node}
        unknown = [n for n in self.exclude if n not in names]
        if unknown:
            raise PassError(f"{self.name}: no node named '{unknown[0]}' to exclude; node names are shown by 'edge inspect'.")
        input_name = artifact.meta.inputs[0].name
        trials = calibration[: self.calibration_trials].astype(np.float32)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._batches = iter(trials[i : i + 1] for i in range(len(trials)))

            def get_next(self) -> dict[str, np.ndarray] | None:
                batch = next(self._batches, None)
                return None if batch is None else {input_name: batch}

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.calibrate]
        with tempfile.TemporaryDirectory(prefix="edge-quantize-") as tmp:
            source, prepared, output = (Path(tmp) / n for n in ("in.onnx", "prep.onnx", "out.onnx"))
            model = onnx.ModelProto()
            model.CopyFrom(artifact.model)
            del model.metadata_props[:]
            model.ir_version = min(model.ir_version, 10)
            onnx.save(model, source)
            chatter = io.StringIO()  # onnxruntime's calibrators print progress to stdout
            try:
                with contextlib.redirect_stdout(chatter):
                    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
                    quantize_static(
                        str(prepared),
                        str(output),
                        Reader(),
                        quant_format=QuantFormat.QDQ,
                        per_channel=self.per_channel,
                        activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=list(self.exclude),
                        calibrate_method=method,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                    )
            except Exception as exc:
                log.debug("onnxruntime.quantization output:\n%s", chatter.getvalue())
                raise PassError(f"{self.name} failed in onnxruntime.quantization: {str(exc).splitlines()[0]}") from None
            quantized = onnx.load(output)
        log.debug("onnxruntime.quantization output:\n%s", chatter.getvalue())
        log.info("%s: %d nodes excluded, calibrated on %d trials", self.name, len(self.exclude), len(trials))
        child = artifact.derive(quantized, self.name, self.params())
        for spec in child.meta.inputs + child.meta.outputs:
            spec.quantization = {"scheme": "int8-qdq-internal", "io": "float32"}
        return child
