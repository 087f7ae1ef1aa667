"""Weight-fault injection speed on the reference SSVEP model: the campaign engine vs rebuilding the session per map.

    .venv/bin/python benchmarks/fault_injection.py [--maps 60] [--trials 1,8,40] [--ber 1e-5] [--workers 2] [--rounds 3]

Both sides evaluate the same seeded fault maps (drawn once, beforehand) on the same synthetic trials, in one run:

* engine: ``WeightFaultEngine``: the targeted weights are graph inputs of one session; per map, XOR the faults into
  the fed arrays, run, XOR them back;
* naive: per map, copy the model, write the faulty weights into its initializers, build a new onnxruntime session
  (default options, i.e. the fastest a user would get) and run it.

The first figure is the injection-side cost alone (a faulty instance ready to run, then restored; faults.md 4.3).
End to end, one injection is one fault map evaluated on ``trials`` inputs, so the figures are maps/s at each
``trials``: the gap closes as inference grows, since both sides must run the model and the naive session even runs
slightly faster kernels (constant weights allow NCHWc reordering and prepacking). The
engine's outputs are checked bit for bit against ``rebuild_and_run`` (a rebuilt session with the engine's settings)
and for top-1 agreement against the naive session. A full ``run_campaign`` (1 and ``--workers`` processes) and an
activation campaign (one in-graph flip per inference) are timed as well.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edge.artifact import read_artifact
from edge.data.registry import load_dataset
from edge.faults import (
    FaultMap,
    WeightFaultEngine,
    apply_fault_map,
    rebuild_and_run,
    run_activation_campaign,
    run_campaign,
)
from edge.zoo import zoo_path


def naive_session(model: onnx.ModelProto, fault_map: FaultMap) -> ort.InferenceSession:
    """Copy the model, write the faulty weights, build a fresh session with onnxruntime's default options."""
    faulty = onnx.ModelProto()
    faulty.CopyFrom(model)
    del faulty.metadata_props[:]
    faulty.ir_version = min(faulty.ir_version, 10)
    names = set(fault_map.tensors)
    arrays = {t.name: numpy_helper.to_array(t).copy() for t in faulty.graph.initializer if t.name in names}
    apply_fault_map(arrays, fault_map)
    for tensor in faulty.graph.initializer:
        if tensor.name in arrays:
            tensor.CopyFrom(numpy_helper.from_array(arrays[tensor.name], tensor.name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(faulty.SerializeToString(), options, providers=["CPUExecutionProvider"])


def naive_run(model: onnx.ModelProto, fault_map: FaultMap, x: np.ndarray, input_name: str) -> np.ndarray:
    """The naive baseline: a new session for the map, then one run."""
    return naive_session(model, fault_map).run(None, {input_name: x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=60, help="fault maps per measurement")
    parser.add_argument("--trials", default="1,8,40", help="inputs each map is evaluated on (comma-separated)")
    parser.add_argument("--ber", type=float, default=1e-5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; the median round is reported")
    args = parser.parse_args()

    reference = read_artifact(zoo_path("ssvep-guney-9ch-0.4s"))
    data = load_dataset("synthetic-ssvep:subjects=31-31,blocks=1,seed=0", reference.meta)
    model, name = reference.model, reference.meta.inputs[0].name

    start = time.perf_counter()
    engine = WeightFaultEngine(model)
    build_ms = (time.perf_counter() - start) * 1e3
    maps = [engine.sample(args.ber, [args.seed, 0, m]) for m in range(args.maps)]
    print(f"reference SSVEP model, {engine.targets.stored_bits:,} weight bits in {len(engine.targets.names)} tensors; "
          f"BER {args.ber:g}: {np.mean([len(m) for m in maps]):.1f} faults per map on average; "
          f"engine built once in {build_ms:.1f} ms; onnxruntime {ort.__version__}")

    for fault_map in maps[:3]:  # the engine computes exactly what a rebuilt model computes
        x = data.x[:8]
        faulty = engine.run_map(fault_map, x)
        assert np.array_equal(faulty, rebuild_and_run(model, fault_map, x), equal_nan=True)
        naive = naive_run(model, fault_map, x, name)
        assert np.array_equal(faulty.argmax(1), naive.argmax(1))
    print("check: engine outputs bit-identical to a rebuilt session for 3 maps; top-1 equal to the naive session")

    def per_map_s(step, maps_: list[FaultMap]) -> float:
        """Median over rounds of the mean seconds per map (rounds damp the noise of a shared machine)."""
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for fault_map in maps_:
                step(fault_map)
            rounds.append((time.perf_counter() - start) / len(maps_))
        return float(np.median(rounds))

    def engine_instance(fault_map: FaultMap) -> None:
        apply_fault_map(engine.targets.arrays, fault_map).undo()

    engine_s = per_map_s(engine_instance, maps)
    naive_s = per_map_s(lambda fault_map: naive_session(model, fault_map), maps)
    print(f"faulty instance ready to run (and restored): engine {engine_s * 1e3:.3f} ms (XOR in place), "
          f"naive {naive_s * 1e3:.2f} ms (copy, write, new session): {naive_s / engine_s:.0f}x")

    print(f"{'trials/map':>10} {'engine maps/s':>14} {'naive maps/s':>13} {'speedup':>8}")
    for trials in [int(t) for t in args.trials.split(",")]:
        x = data.x[:trials]
        engine.run_map(maps[0], x)  # warm up both paths
        naive_run(model, maps[0], x, name)
        engine_s = per_map_s(lambda fault_map, x=x: engine.run_map(fault_map, x), maps)
        naive_s = per_map_s(lambda fault_map, x=x: naive_run(model, fault_map, x, name), maps)
        print(f"{trials:>10} {1 / engine_s:14.1f} {1 / naive_s:13.1f} {naive_s / engine_s:7.1f}x")

    bers = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
    for workers in sorted({1, args.workers}):
        start = time.perf_counter()
        result = run_campaign(reference, data.x, data.y, bers=bers, maps=args.maps, seed=args.seed, workers=workers)
        elapsed = time.perf_counter() - start
        print(f"run_campaign, {len(bers)} BERs x {args.maps} maps x {len(data.x)} trials, {workers} worker(s): "
              f"{elapsed:.2f} s, {len(bers) * args.maps / elapsed:.1f} maps/s (incl. sampling, process start)")
    print("mean accuracy per BER: " + ", ".join(f"{p['ber']:g}: {p['accuracy']['mean']:.3f}" for p in result.points())
          + f" (clean {result.clean()['accuracy']:.3f})")

    start = time.perf_counter()
    activation = run_activation_campaign(reference, data.x, data.y, injections=4000, seed=args.seed)
    elapsed = time.perf_counter() - start
    doc = activation.to_dict()
    print(f"activation faults: 4000 single-flip injections in {elapsed:.2f} s ({4000 / elapsed:.0f} injections/s), "
          f"SDC {doc['sdc']['rate']:.4f}, DUE {doc['due']['rate']:.4f}")


if __name__ == "__main__":
    main()
