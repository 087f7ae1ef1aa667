"""The reference spiking network on every target: accuracy, spikes, SynOps, size and time per step, as ratios.

    .venv/bin/python benchmarks/snn.py [--model snn-ssvep-delta] [--data synthetic-ssvep:subjects=31-35] [--micro 120]

Rows: fp32 step graph (onnxruntime), int8 connections (onnxruntime QDQ), their TFLite exports in LiteRT
(reference kernels) and TFLite Micro, and Vela's estimate for ethos-u55-128. Time per step is measured at batch 1
in one run, round-robin, and reported as a ratio to the fp32 ONNX step; the Scan form's time per step over a whole
batch is shown too. TFLite Micro runs one sample at a time, so it is evaluated on the first ``--micro`` samples
(its accuracy is compared with the others' on the same samples).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from converters.snn_quantize import QuantizeSpiking
from converters.tflite import export_tflite
from edge.data.spiking import load_spike_dataset
from edge.families.snn.lower import scan_model
from edge.families.snn.runner import run_sequence, scores, synaptic_operations
from edge.faults.engine import create_session
from edge.snn import load_spiking_model
from runtimes.litert_session import LiteRTSession
from runtimes.onnxruntime_session import OnnxRuntimeSession
from runtimes.tflm_session import TFLMSession
from runtimes.vela import compile_for_npu


def step_seconds(engines: dict, meta, rounds: int = 5, calls: int = 200) -> dict[str, float]:
    """Median seconds per batch-1 step call of each engine, timed round-robin."""
    shape = next(s.shape for s in meta.inputs if s.name == "x")[1:]
    feeds = {"x": np.zeros((1, *shape), np.float32),
             **{s["input"]: np.zeros((1, *s["shape"]), np.float32) for s in meta.task["state"]}}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            for _ in range(20):
                engine(feeds)
            start = time.perf_counter()
            for _ in range(calls):
                engine(feeds)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="snn-ssvep-delta")
    parser.add_argument("--data", default="synthetic-ssvep:subjects=31-35,seed=0")
    parser.add_argument("--calib", default=None, help="calibration data (default: the model's own)")
    parser.add_argument("--micro", type=int, default=120, help="samples run on TFLite Micro")
    args = parser.parse_args()
    _, fp32 = load_spiking_model(args.model)
    data = load_spike_dataset(args.data, fp32.meta)
    calib = load_spike_dataset(args.calib or fp32.meta.extra["calibration_data"], fp32.meta).x
    int8 = QuantizeSpiking()(fp32, calib)
    tfl32, tfl8 = export_tflite(fp32, io="float32"), export_tflite(int8, io="float32")
    engines = {
        "fp32 onnx": OnnxRuntimeSession(fp32, threads=1).run_named,
        "int8 onnx (QDQ)": OnnxRuntimeSession(int8, threads=1).run_named,
        "fp32 tflite (LiteRT)": LiteRTSession(tfl32, kernels="reference", threads=1).run_named,
        "int8 tflite (LiteRT)": LiteRTSession(tfl8, kernels="reference", threads=1).run_named,
        "int8 tflite (TFLite Micro)": TFLMSession(tfl8).run_named,
    }
    sizes = {"fp32 onnx": len(fp32.to_bytes()), "int8 onnx (QDQ)": len(int8.to_bytes()),
             "fp32 tflite (LiteRT)": len(tfl32), "int8 tflite (LiteRT)": len(tfl8),
             "int8 tflite (TFLite Micro)": len(tfl8)}
    n_micro = min(args.micro, len(data))
    results = {}
    for name, engine in engines.items():
        micro = "Micro" in name
        x = data.x[:n_micro] if micro else data.x
        recording = run_sequence(engine, fp32.meta, x, batch=1 if micro else 64)
        predicted = scores(recording).argmax(1)
        results[name] = {"predicted": predicted, "recording": recording}
    speed = step_seconds(engines, fp32.meta)

    scan = create_session(scan_model(fp32.model), threads=1)
    batch = data.x[:64]
    scan.run(None, {"x": batch})
    start = time.perf_counter()
    scan.run(None, {"x": batch})
    scan_step = (time.perf_counter() - start) / (len(batch) * batch.shape[1])

    _, vela = compile_for_npu(tfl8, "ethos-u55-128")
    y = data.y
    base = speed["fp32 onnx"]
    print(f"{args.model}: {len(data)} samples x {data.x.shape[1]} steps ({args.data}); TFLite Micro on the first "
          f"{n_micro}")
    print(f"{'variant':<28}{'accuracy':>10}{'acc (micro set)':>17}{'agree fp32':>12}{'size B':>10}{'us/step':>9}"
          f"{'x fp32':>8}")
    reference = results["fp32 onnx"]["predicted"]
    for name in engines:
        p = results[name]["predicted"]
        full = f"{100 * np.mean(p == y):.1f} %" if len(p) == len(y) else "-"
        micro = f"{100 * np.mean(p[:n_micro] == y[:n_micro]):.1f} %"
        agree = f"{100 * np.mean(p == reference[:len(p)]):.1f} %"
        print(f"{name:<28}{full:>10}{micro:>17}{agree:>12}{sizes[name]:>10,}{1e6 * speed[name]:>9.1f}"
              f"{base / speed[name]:>8.2f}")
    print(f"{'fp32 Scan over T (batch 64)':<28}{'':>10}{'':>17}{'':>12}{'':>10}{1e6 * scan_step:>9.2f}"
          f"{base / scan_step:>8.2f}")
    ops = synaptic_operations(results["fp32 onnx"]["recording"], fp32.meta)
    ops8 = synaptic_operations(results["int8 onnx (QDQ)"]["recording"], fp32.meta)
    rates = {k[7:]: float(v.mean()) for k, v in results["fp32 onnx"]["recording"].outputs.items()
             if k.startswith("spikes.")}
    print("spike rate per layer (fp32): " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in rates.items()))
    print(f"SynOps per sample: fp32 {ops['synops_per_sample']:,.0f}, int8 {ops8['synops_per_sample']:,.0f}; dense "
          f"{ops['dense_macs']:,.0f} MACs ({100 * ops['synops_per_sample'] / ops['dense_macs']:.1f} %)")
    print(f"energy estimate per sample: {ops['energy']['snn_nj']:.1f} nJ vs dense {ops['energy']['dense_ann_nj']:.1f} "
          f"nJ ({ops['energy']['source']})")
    print(f"Vela ethos-u55-128 (int8 step file): {vela.get('npu_operators')} operators on the NPU, "
          f"{vela.get('cpu_operators')} on the CPU ({', '.join(sorted({o['op'] for o in vela['cpu_operations']}))}); "
          f"NPU part {1e6 * (vela.get('latency_s') or 0):.1f} us per step (estimate)")


if __name__ == "__main__":
    main()
