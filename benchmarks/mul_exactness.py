"""int8 Mul output scales (converters.integer_scales.exact_activation_products) on corpus ONNX files, before/after.

For each ONNX file (with ``<name>_calib.npz`` beside it, array ``x``), quantizes with QuantizeInt8 as the
conformance harness does, with the Mul output scales chosen ("after") and left as calibrated ("before"),
exports the int8-I/O TFLite file and prints, against the ONNX QDQ model in onnxruntime on N(0, 1) held-out
inputs: top-1 agreement, largest and mean output difference in steps of LiteRT's reference kernels and of
TFLite Micro, and whether TFLite Micro is bit-exact with LiteRT.

    .venv/bin/python benchmarks/conformance.py --only efficientnet_b0 --models-dir corpus --no-vela
    .venv/bin/python benchmarks/mul_exactness.py corpus/efficientnet_b0_dyn_op13.onnx --trials 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

import converters.quantize as quantize
from converters.tflite import export_tflite
from edge.artifact import Artifact
from runtimes.litert_session import LiteRTSession
from runtimes.onnxruntime_session import OnnxRuntimeSession
from runtimes.tflm_session import TFLMSession

HELDOUT_SEED = 20


def output_step(data: bytes) -> float:
    """The scale of the TFLite file's first output."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(data, 0).subgraphs[0]
    return float(graph.tensors[graph.outputs[0]].quantization.scale[0])


def measure(path: Path, chosen: bool, trials: int) -> str:
    """One line: agreement and step differences of LiteRT reference and TFLite Micro vs the ONNX QDQ model."""
    calibration = np.load(path.with_name(f"{path.stem}_calib.npz"))["x"]
    artifact = Artifact.from_model(onnx.load(path))
    if chosen:
        quantized = quantize.QuantizeInt8()(artifact, calibration)
    else:  # the calibrated Mul scales: the same pass with the scale choice switched off for this call
        choose = quantize.exact_activation_products
        quantize.exact_activation_products = lambda model: ([], [])
        try:
            quantized = quantize.QuantizeInt8()(artifact, calibration)
        finally:
            quantize.exact_activation_products = choose
    data = export_tflite(quantized, io="int8")
    x = np.random.default_rng(HELDOUT_SEED).standard_normal((trials, *calibration.shape[1:])).astype(np.float32)
    session, name = OnnxRuntimeSession(quantized), quantized.model.graph.input[0].name
    want = np.concatenate([session.run({name: t[None]})[0] for t in x])  # one at a time: batch-1 files too
    litert = LiteRTSession(data, kernels="reference")
    got = {"LiteRT ref": np.concatenate([litert.run({"x": t[None]})[0] for t in x]),
           "TFLM": TFLMSession(data).run({"x": x})[0]}
    step, cells = output_step(data), []
    for engine, y in got.items():
        y = y.reshape(want.shape)
        steps = np.abs(y.astype(np.float64) - want) / step
        top1 = np.mean(y.reshape(trials, -1).argmax(1) == want.reshape(trials, -1).argmax(1))
        cells.append(f"{engine} top-1 {top1:.1%} max {steps.max():.0f} mean {steps.mean():.2f} steps")
    exact = np.array_equal(got["LiteRT ref"], got["TFLM"])
    return f"{path.stem} {'after' if chosen else 'before'}: " + "; ".join(cells) + f"; TFLM == LiteRT {exact}"


def main() -> None:
    """Print the before/after lines for every file given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--trials", type=int, default=64)
    args = parser.parse_args()
    for path in args.models:
        for chosen in (False, True):
            print(measure(path, chosen, args.trials), flush=True)


if __name__ == "__main__":
    main()
