"""Do the int8 SSVEP and EEGNet models predict the same on every target? And what does the NPU estimate?

Exports each fully int8 model once as an int8-I/O TFLite file (what an NPU takes) and runs that one file on
``cpu`` (LiteRT), ``mcu:tflm`` (TFLite Micro on the host), ``sim`` (the virtual board over a real pty,
TFLite Micro behind the MLPerf Tiny protocol) and the NPU target's functional run, then prints per target:
accuracy, top-1 agreement with ``mcu:tflm`` (the microcontroller reference) and with the int8 ONNX model in
onnxruntime (the host reference), latency as each target measures it, and memory; plus Vela's estimate.

    .venv/bin/python benchmarks/device_agreement.py            # SSVEP subjects 31-35 (1,200 trials) + EEGNet
    .venv/bin/python benchmarks/device_agreement.py --quick    # subject 31 only (240 trials)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from converters.quantize import QuantizeInt8
from converters.tflite import export_tflite
from edge.data.registry import load_dataset
from edge.deploy import deploy
from edge.errors import EdgeError
from edge.evaluate import compare_outputs, predict, run_all
from edge.models import resolve_model
from edge.tflite_model import TfliteModel

MMI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "eegmmidb_s001"
DEVICES = ("mcu:tflm", "cpu", "cpu?kernels=builtin", "sim", "npu:ethos-u55-128")


def models(quick: bool):
    """(name, int8 ONNX artifact, held-out dataset) for the SSVEP reference and, when the data are here, EEGNet."""
    _, ssvep = resolve_model("ssvep-guney-9ch-0.4s")
    calibration = load_dataset(ssvep.meta.extra["calibration_data"], ssvep.meta).x
    subjects = "31-31" if quick else "31-35"
    yield ("ssvep int8", QuantizeInt8(exclude=[])(ssvep, calibration),
           load_dataset(f"synthetic-ssvep:subjects={subjects},seed=0", ssvep.meta))
    if MMI.is_dir():
        _, eegnet = resolve_model("eegnet-mmi-s001")
        calibration = load_dataset(f"{MMI}:runs=6+10", eegnet.meta).x
        yield ("eegnet int8", QuantizeInt8(exclude=[])(eegnet, calibration),
               load_dataset(f"{MMI}:runs=4+8+12+14", eegnet.meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="SSVEP subject 31 only.")
    args = parser.parse_args()
    for name, artifact, data in models(args.quick):
        tflite = TfliteModel.from_bytes(export_tflite(artifact, io="int8"))
        onnx_top1 = predict(artifact, data.x).argmax(1)
        print(f"\n{name}: {len(data)} trials of {data.name}, int8-I/O TFLite {len(tflite.data) / 1024:.1f} KiB")
        print(f"{'target':<24}{'accuracy %':>11}{'= mcu:tflm':>12}{'= ONNX int8':>13}{'latency p50 ms':>16}"
              f"{'  memory':<30}{'run s':>7}")
        reference = None
        for device in DEVICES:
            start = time.perf_counter()
            try:
                target, _, report = deploy(tflite, device)
            except EdgeError as exc:
                print(f"{device:<24}{'':>11}  cannot run it: {exc}")
                continue
            try:
                outputs = run_all(target, data.x)
                times = target.latency(data.x[0], runs=50, warmup=5)
                memory = target.memory(data.x[0])
                info = target.info()
            finally:
                target.close()
            top1 = outputs.argmax(1)
            if device == "mcu:tflm":
                reference = outputs
            same_mcu = "" if reference is None else f"{int(np.sum(top1 == reference.argmax(1)))}/{len(top1)}"
            mem = ", ".join(f"{k[:-6]} {v / 1024:.1f} KiB" for k, v in memory.items() if k.endswith("_bytes"))
            print(f"{device:<24}{100 * np.mean(top1 == data.y):>11.2f}{same_mcu:>12}"
                  f"{f'{int(np.sum(top1 == onnx_top1))}/{len(top1)}':>13}{1e3 * np.median(times):>16.3f}"
                  f"  {mem:<28}{time.perf_counter() - start:>7.1f}")
            if device.startswith("npu"):
                print(f"  Vela {info.get('accelerator')} @ {info.get('clock_hz', 0) / 1e6:.0f} MHz "
                      f"({info.get('system_config')}): {info.get('npu_operators')} NPU / {info.get('cpu_operators')} "
                      f"CPU operators, {info.get('cycles_total')} cycles, estimated {1e3 * np.median(times):.3f} ms")
        drift = compare_outputs(predict(artifact, data.x), reference)
        print(f"mcu:tflm vs int8 ONNX (onnxruntime): top-1 agreement {100 * drift.top1_agreement:.2f} %, "
              f"cosine {drift.cosine_similarity:.5f}, max error {drift.max_abs_error:.3g}")
        # devices run the same file: their top-1 must agree with the microcontroller reference exactly


if __name__ == "__main__":
    main()
