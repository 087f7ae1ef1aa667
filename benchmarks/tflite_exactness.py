"""Does the int8 TFLite file compute what the int8 ONNX model computes? SSVEP and EEGNet, every held-out trial.

For each model, quantized with and without the even weight grid (``integer_exact``), exports the float-I/O
TFLite file and runs it in LiteRT (builtin kernels, and the reference kernels where LiteRT has them all) and
in TFLite Micro, then prints against the ONNX QDQ model in onnxruntime: decisions that differ, logits that
differ, the largest difference in output steps, and accuracy. Then compiles the int8-I/O file with Vela
for ethos-u55-128 and prints how many operators land on the NPU.

    .venv/bin/python benchmarks/tflite_exactness.py            # SSVEP subjects 31-35 (1,200 trials) + EEGNet (60)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.data.registry import load_dataset
from edge.errors import EngineError
from edge.evaluate import predict
from edge.models import resolve_model
from runtimes.litert_session import LiteRTSession
from runtimes.tflm_session import TFLMSession
from runtimes.vela import compile_for_npu

MMI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "eegmmidb_s001"


def models():
    """(name, float artifact, calibration x, held-out dataset)."""
    _, ssvep = resolve_model("ssvep-guney-9ch-0.4s")
    yield ("ssvep-guney-9ch-0.4s", ssvep, load_dataset(ssvep.meta.extra["calibration_data"], ssvep.meta).x,
           load_dataset("synthetic-ssvep:subjects=31-35,seed=0", ssvep.meta))
    if MMI.is_dir():
        _, eegnet = resolve_model("eegnet-mmi-s001")
        yield ("eegnet-mmi-s001", eegnet, load_dataset(f"{MMI}:runs=6+10", eegnet.meta).x,
               load_dataset(f"{MMI}:runs=4+8+12+14", eegnet.meta))


def output_step(artifact) -> float:
    graph = artifact.model.graph
    last = next(n for n in graph.node if n.output[0] == graph.output[0].name)
    return float(numpy_helper.to_array(next(t for t in graph.initializer if t.name == last.input[1])))


def engines(data: bytes):
    yield "LiteRT builtin", LiteRTSession(data, kernels="builtin")
    try:
        yield "LiteRT reference", LiteRTSession(data, kernels="reference")
    except EngineError:
        pass  # LiteRT's reference resolver lacks an op (EEGNet's ELU)
    yield "TFLite Micro", TFLMSession(data)


def main() -> None:
    print(f"{'model':<22}{'weights':<14}{'engine':<18}{'ONNX acc %':>11}{'top-1 differs':>15}{'logits differ':>15}"
          f"{'max steps':>10}")
    for name, artifact, calibration, heldout in models():
        x = heldout.x.astype(np.float32)
        for exact in (False, True):
            int8 = QuantizeInt8(exclude=[], integer_exact=exact)(artifact, calibration)
            want = predict(int8, x)
            step = output_step(int8)
            data = export_tflite(int8)
            grid = "even (exact)" if exact else "onnxruntime"
            for engine, session in engines(data):
                got = session.run({"x": x})[0]
                steps = np.abs(got - want) / step
                print(f"{name:<22}{grid:<14}{engine:<18}{100 * np.mean(want.argmax(1) == heldout.y):>11.2f}"
                      f"{int(np.sum(got.argmax(1) != want.argmax(1))):>10}/{len(x):<4}"
                      f"{int(np.sum(steps > 0.5)):>9}/{steps.size:<5}{steps.max():>10.2f}")
        start = time.perf_counter()
        _, summary = compile_for_npu(export_tflite(int8, io="int8"), "ethos-u55-128")
        print(f"{name}: Vela ethos-u55-128 on the int8-I/O file: {summary['npu_operators']} NPU operators, "
              f"{summary['cpu_operators']} CPU operators, all on the NPU: {summary['all_on_npu']} "
              f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
