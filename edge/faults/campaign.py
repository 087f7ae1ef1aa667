"""Weight-fault campaigns: accuracy and outcome rates versus bit error rate, resumable and spread over processes.

>>> result = run_campaign(artifact, x, y, bers=(1e-7, 1e-6, 1e-5), maps=100, workers=2, state_path="fi.jsonl")
>>> [p["accuracy"]["mean"] for p in result.points()]

For every BER point, ``maps`` fault maps are drawn (map ``m`` of point ``b`` from ``SeedSequence([seed, b, m])``,
so results do not depend on the number of workers or on interruptions), applied in place to the weights of one
ONNX Runtime session per process (:class:`~edge.faults.engine.WeightFaultEngine`), and every input is run.

**Outcomes.** Accuracy counts every input (a non-finite output is wrong). Masked / SDC / DUE are counted on the
inputs the clean (golden) model classifies correctly: DUE (detected) when the output holds NaN or Inf, otherwise
SDC when the top-1 class differs from the golden one, otherwise masked (PyTorchALFI's definitions; DUEs are
removed before SDC is counted).

**Intervals.** The maps are the independent units: the inputs are the same for every map, so the outcomes of one
map are correlated (a map that wrecks an exponent bit wrecks most inputs at once). Hence:

* ``accuracy.ci95`` and each rate's ``ci95`` are Student-t intervals of the mean over the maps' values (the
  expected accuracy or rate under a random fault map, for these inputs);
* each rate's ``wilson95`` is the Wilson interval on the pooled counts, which treats every (map, input) pair as
  independent; it is right for one fault per inference and too narrow when maps differ; given for comparison;
* ``maps_with_sdc`` / ``maps_with_due`` give the fraction of maps that caused at least one SDC / DUE with an exact
  Clopper-Pearson interval, which stays honest when every map gave the same value (e.g. no map did harm at 1e-7).

The clean accuracy carries a Wilson interval over the inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge.artifact import Artifact
from edge.errors import DataError, PassError
from edge.faults.engine import WeightFaultEngine
from edge.faults.models import FaultMap, FaultModel, FaultTargets, sample_fault_map
from edge.faults.statistics import (
    clopper_pearson_interval,
    mean_interval,
    wilson_interval,
)

DEFAULT_BERS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
STATE_FORMAT = "edge-fault-campaign-state"
RESULT_SCHEMA_VERSION = 1
OUTCOME_FIELDS = ("faults", "correct", "masked", "sdc", "due")


@dataclass(frozen=True)
class MapOutcome:
    """What one fault map did: its fault count, correct inputs (of all), and masked/SDC/DUE (of golden-correct)."""

    ber_index: int
    map_index: int
    faults: int
    correct: int
    masked: int
    sdc: int
    due: int

    def row(self) -> list[int]:
        """Compact JSON row ``[ber_index, map_index, faults, correct, masked, sdc, due]``."""
        return list(dataclasses.astuple(self))


def classify(outputs: np.ndarray, y: np.ndarray, golden: np.ndarray) -> tuple[int, int, int, int]:
    """Correct (of all inputs) and masked, SDC, DUE (of the inputs whose golden prediction is right)."""
    scores = outputs.reshape(len(outputs), -1)
    finite = np.isfinite(scores).all(axis=1)
    predicted = scores.argmax(axis=1)
    good = golden == y
    due = good & ~finite
    sdc = good & finite & (predicted != golden)
    correct = finite & (predicted == y)
    return int(correct.sum()), int(good.sum() - due.sum() - sdc.sum()), int(sdc.sum()), int(due.sum())


def map_seed(seed: int, ber_index: int, map_index: int) -> list[int]:
    """The integers that seed map ``map_index`` of BER point ``ber_index``."""
    return [int(seed), int(ber_index), int(map_index)]


class _Evaluator:
    """One engine plus the data and golden predictions; evaluates chunks of maps (in a worker or inline)."""

    def __init__(self, model: onnx.ModelProto | None, fault: FaultModel, x: np.ndarray, y: np.ndarray,
                 bers: Sequence[float], seed: int, batch_size: int, threads: int | None, engine: Any = None) -> None:
        self.engine = engine or WeightFaultEngine(model, fault, threads=threads, batch_size=batch_size)
        self.x, self.y, self.bers, self.seed = x, y, list(bers), seed
        self.golden_outputs = self.engine.run(x)
        self.golden = self.golden_outputs.reshape(len(x), -1).argmax(axis=1)

    def fault_map(self, ber_index: int, map_index: int) -> FaultMap:
        return sample_fault_map(self.engine.targets, self.bers[ber_index], map_seed(self.seed, ber_index, map_index))

    def evaluate(self, ber_index: int, map_indices: Sequence[int]) -> list[MapOutcome]:
        outcomes = []
        for m in map_indices:
            fault_map = self.fault_map(ber_index, m)
            # A map without faults leaves the weights untouched: the golden outputs of this same session are exact.
            outputs = self.engine.run_map(fault_map, self.x) if len(fault_map) else self.golden_outputs
            outcomes.append(MapOutcome(ber_index, m, len(fault_map), *classify(outputs, self.y, self.golden)))
        return outcomes


_WORKER: _Evaluator | None = None


def _init_worker(model_bytes: bytes, *args: Any) -> None:
    global _WORKER
    _WORKER = _Evaluator(onnx.load_model_from_string(model_bytes), *args)


def _work(ber_index: int, map_indices: list[int]) -> list[MapOutcome]:
    if _WORKER is None:
        raise RuntimeError("campaign worker used before its pool initializer ran")
    return _WORKER.evaluate(ber_index, map_indices)


@dataclass
class CampaignResult:
    """Every map's outcome of a weight-fault campaign plus what it was run on; summaries are computed from them."""

    params: dict[str, Any]
    inputs: int
    golden_correct: int
    targets: list[str]
    sites: int
    outcomes: list[MapOutcome]

    @property
    def bers(self) -> list[float]:
        """The BER grid, in the order of the points."""
        return list(self.params["bers"])

    def clean(self) -> dict[str, Any]:
        """Clean (fault-free) accuracy with its Wilson interval over the inputs."""
        lo, hi = wilson_interval(self.golden_correct, self.inputs)
        return {"accuracy": self.golden_correct / self.inputs, "ci95": [lo, hi], "n": self.inputs, "interval": "Wilson"}

    def point_outcomes(self, ber_index: int) -> list[MapOutcome]:
        """The outcomes of one BER point, by map index."""
        return sorted((o for o in self.outcomes if o.ber_index == ber_index), key=lambda o: o.map_index)

    def points(self) -> list[dict[str, Any]]:
        """One summary per BER point (see the module docstring for the intervals)."""
        return [self._summary(i, ber) for i, ber in enumerate(self.bers)]

    def _summary(self, ber_index: int, ber: float) -> dict[str, Any]:
        rows = self.point_outcomes(ber_index)
        n_maps, good = len(rows), self.golden_correct
        faults = np.array([o.faults for o in rows], dtype=float)
        correct = np.array([o.correct for o in rows], dtype=int)
        accuracy = correct / self.inputs
        summary: dict[str, Any] = {
            "ber": ber,
            "maps": n_maps,
            "faults": {"mean": float(faults.mean()) if n_maps else 0.0, "expected": self.sites * ber},
            "accuracy": {
                "mean": int(correct.sum()) / (n_maps * self.inputs) if n_maps else float("nan"),
                "ci95": list(mean_interval(accuracy)),
                "min": float(accuracy.min()) if n_maps else float("nan"),
                "max": float(accuracy.max()) if n_maps else float("nan"),
                "interval": "Student t over maps",
            },
        }
        for name in ("masked", "sdc", "due"):
            counts = np.array([getattr(o, name) for o in rows], dtype=int)
            total = int(counts.sum())
            summary[name] = {
                "rate": total / (n_maps * good) if n_maps and good else float("nan"),
                "ci95": list(mean_interval(counts / good)) if good else [0.0, 1.0],
                "wilson95": list(wilson_interval(total, n_maps * good)),
                "count": total,
                "n": n_maps * good,
            }
        for name in ("sdc", "due"):
            hit = sum(1 for o in rows if getattr(o, name) > 0)
            summary[f"maps_with_{name}"] = {"fraction": hit / n_maps if n_maps else float("nan"), "count": hit,
                                            "ci95": list(clopper_pearson_interval(hit, n_maps))}
        summary["per_map"] = {f: [getattr(o, f) for o in rows] for f in OUTCOME_FIELDS}
        return summary

    def fault_map(self, model: Artifact | onnx.ModelProto, ber_index: int, map_index: int) -> FaultMap:
        """The exact fault map ``map_index`` of BER point ``ber_index``, e.g. to replay it on a device."""
        model = model.model if isinstance(model, Artifact) else model
        if _model_sha256(model) != self.params["model_sha256"]:
            raise DataError("this campaign was run on another model; give the model it ran on to rebuild its maps.")
        if not (0 <= ber_index < len(self.bers) and 0 <= map_index < self.params["maps"]):
            raise DataError(f"the campaign has BER points 0..{len(self.bers) - 1} and maps "
                            f"0..{self.params['maps'] - 1}; got point {ber_index}, map {map_index}.")
        targets = FaultTargets.from_model(model, FaultModel.from_dict(self.params["fault"]))
        return sample_fault_map(targets, self.bers[ber_index], map_seed(self.params["seed"], ber_index, map_index))

    def auc(self) -> float:
        """FT-ClipAct's area under mean accuracy vs BER point, on evenly spaced x in (0, 1] (not the BER values)."""
        means = [p["accuracy"]["mean"] for p in self.points()]
        if len(means) < 2:
            return float(means[0]) if means else float("nan")
        xs = np.linspace(1.0 / len(means), 1.0, len(means))
        return float(np.trapezoid(means, xs))

    def to_dict(self) -> dict[str, Any]:
        """The result document: parameters, clean accuracy, targets and one summary (with per-map rows) per BER."""
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "kind": "weight-fault-campaign",
            "params": self.params,
            "inputs": self.inputs,
            "golden_correct": self.golden_correct,
            "clean": self.clean(),
            "targets": self.targets,
            "sites": self.sites,
            "points": self.points(),
        }

    def to_json(self, indent: int | None = None) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> CampaignResult:
        """Rebuild a result from :meth:`to_json` output (the summaries are recomputed from the per-map rows)."""
        try:
            doc = json.loads(text)
            outcomes = [
                MapOutcome(b, m, *(point["per_map"][f][m] for f in OUTCOME_FIELDS))
                for b, point in enumerate(doc["points"])
                for m in range(len(point["per_map"]["faults"]))
            ]
            return cls(doc["params"], doc["inputs"], doc["golden_correct"], doc["targets"], doc["sites"], outcomes)
        except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            raise DataError(f"not a fault-campaign result document ({exc!r}).") from None


def run_campaign(
    artifact: Artifact | onnx.ModelProto,
    x: np.ndarray,
    y: np.ndarray,
    *,
    bers: Sequence[float] = DEFAULT_BERS,
    maps: int = 100,
    seed: int = 0,
    fault: FaultModel | None = None,
    workers: int = 1,
    state_path: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    chunk_size: int = 10,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    engine: Any = None,
) -> CampaignResult:
    """Sweep ``bers`` with ``maps`` random weight-fault maps each and count accuracy and masked/SDC/DUE outcomes.

    ``x`` holds inputs in the model's layout and ``y`` integer labels; the model's first output is read as
    logits ``(N, classes)``. With ``state_path``, every finished chunk of ``chunk_size`` maps is appended to a
    JSON-lines file (flushed and fsynced), and a restarted campaign with the same parameters skips what is there
    and ends with exactly the same result; a state file of another campaign is refused. ``workers`` processes each
    build one session (they are spawned, so a script calling this with ``workers > 1`` must guard its entry point
    with ``if __name__ == "__main__":``); ``threads`` sets onnxruntime's threads per process (default: all cores
    shared out). ``progress(done, total)`` is called after every finished chunk.

    ``engine`` runs the maps instead of an onnxruntime :class:`WeightFaultEngine`: any object with ``targets``
    (:class:`FaultTargets`), ``run(x)`` and ``run_map(fault_map, x)``, such as ``devices.base.TargetFaultEngine``
    for a device. It runs in this process (``workers`` must be 1), and ``artifact`` may then be any model with a
    ``sha256`` (a TFLite file). The maps depend only on the seed and the engine's targets, so targets that store
    the same tensors (a TFLite file on cpu, mcu:tflm, the NPU or a board) get the very same maps.
    """
    model = artifact.model if isinstance(artifact, Artifact) else artifact
    fault = fault or FaultModel()
    x, y = _check_data(x, y)
    bers = [float(b) for b in bers]
    _check_params(bers, maps, workers, batch_size, chunk_size)
    if engine is not None and workers != 1:
        raise PassError("A campaign on a device engine runs in one process; 'workers' must be 1.")
    params = campaign_params(model, x, y, bers=bers, maps=maps, seed=seed, fault=fault, batch_size=batch_size)
    if threads is None and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)

    state = _State(Path(state_path), params) if state_path is not None else None
    done: dict[tuple[int, int], MapOutcome] = {} if state is None else state.load()
    total = len(bers) * maps

    evaluator = _Evaluator(model if engine is None else None, fault, x, y, bers, seed, batch_size, threads, engine)
    pending = [(b, [m for m in range(maps) if (b, m) not in done]) for b in range(len(bers))]
    tasks = [(b, chunk) for b, todo in pending for chunk in _chunks(todo, chunk_size)]

    def finish(outcomes: list[MapOutcome]) -> None:
        if state is not None:
            state.append(outcomes)
        for o in outcomes:
            done[(o.ber_index, o.map_index)] = o
        if progress is not None:
            progress(len(done), total)

    if workers == 1 or len(tasks) <= 1:
        for b, chunk in tasks:
            finish(evaluator.evaluate(b, chunk))
    else:
        _run_pool(tasks, finish, workers, model, fault, x, y, bers, seed, batch_size, threads)

    outcomes = sorted(done.values(), key=lambda o: (o.ber_index, o.map_index))
    golden_correct = int(np.sum(evaluator.golden == y))
    targets = evaluator.engine.targets
    return CampaignResult(params, len(x), golden_correct, list(targets.names), targets.sites, outcomes)


def _run_pool(tasks: list[tuple[int, list[int]]], finish: Callable[[list[MapOutcome]], None], workers: int,
              model: onnx.ModelProto, fault: FaultModel, x: np.ndarray, y: np.ndarray, bers: list[float],
              seed: int, batch_size: int, threads: int | None) -> None:
    """Spread the chunks over ``workers`` spawned processes, each holding one engine; record chunks as they end."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # forking a process that holds onnxruntime threads can hang
    initargs = (model.SerializeToString(), fault, x, y, bers, seed, batch_size, threads)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=initargs) as pool:
        futures = {pool.submit(_work, b, chunk) for b, chunk in tasks}
        try:
            while futures:
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    finish(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def campaign_params(model: Any, x: np.ndarray, y: np.ndarray, *, bers: Sequence[float], maps: int,
                    seed: int, fault: FaultModel, batch_size: int) -> dict[str, Any]:
    """Everything a campaign's result depends on (hashes for the model and data): the key of its state file."""
    data = hashlib.sha256()
    for array in (x, y):
        data.update(f"{array.dtype.str}{array.shape}".encode())
        data.update(np.ascontiguousarray(array).tobytes())
    return {
        "bers": [float(b) for b in bers],
        "maps": int(maps),
        "seed": int(seed),
        "fault": fault.to_dict(),
        "batch_size": int(batch_size),
        "model_sha256": _model_sha256(model) if isinstance(model, onnx.ModelProto) else str(model.sha256),
        "data_sha256": data.hexdigest(),
        "inputs": len(x),
    }


def _model_sha256(model: onnx.ModelProto) -> str:
    """Hash of the graph without its metadata (so an Artifact and its bare model hash the same)."""
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    del plain.metadata_props[:]
    return hashlib.sha256(plain.SerializeToString(deterministic=True)).hexdigest()


class _State:
    """Append-only JSON-lines record of finished chunks: a header line with the parameters, then one line per chunk."""

    def __init__(self, path: Path, params: dict[str, Any]) -> None:
        self.path = path
        self.params = params

    def load(self) -> dict[tuple[int, int], MapOutcome]:
        """Outcomes already recorded (creating the file with its header when new); refuses another campaign's file."""
        where = str(self.path)
        if self.path.is_dir():
            raise DataError("the campaign state path is a folder; give a file name.", where=where)
        if not self.path.exists() or self.path.stat().st_size == 0:
            if not self.path.parent.is_dir():
                raise DataError(f"the folder '{self.path.parent}' does not exist.", where=where)
            self._rewrite([])
            return {}
        lines = self.path.read_bytes().split(b"\n")
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            raise DataError("not a fault-campaign state file (its first line is not JSON).", where=where) from None
        if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
            raise DataError("not a fault-campaign state file; choose another state path.", where=where)
        if header.get("params") != self.params:
            stored = header.get("params") or {}
            differ = sorted(k for k in set(stored) | set(self.params) if stored.get(k) != self.params.get(k))
            raise DataError(f"the state file belongs to a campaign with other parameters ({', '.join(differ)}); "
                            "delete it or choose another state path to start afresh.", where=where)
        chunks, intact = [], True
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                chunks.append(json.loads(line)["maps"])
            except (json.JSONDecodeError, KeyError, TypeError):
                intact = False  # a chunk cut short by a kill; its maps are simply run again
                break
        done = {}
        for rows in chunks:
            for row in rows:
                outcome = MapOutcome(*row)
                done[(outcome.ber_index, outcome.map_index)] = outcome
        if not intact or lines[-1] != b"":
            self._rewrite(chunks)
        return done

    def append(self, outcomes: list[MapOutcome]) -> None:
        """Add one finished chunk durably (flush and fsync), so a kill loses at most the chunk being written."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"maps": [o.row() for o in outcomes]}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _rewrite(self, chunks: list[list[list[int]]]) -> None:
        """Write the header and the intact chunks to a temporary file and rename it over the state file."""
        lines = [json.dumps({"format": STATE_FORMAT, "version": 1, "params": self.params})]
        lines += [json.dumps({"maps": rows}) for rows in chunks]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def _check_data(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"a campaign needs a batch of inputs shaped (N, ...); got shape {x.shape}.")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"a campaign needs one integer label per input; got labels of shape {y.shape} "
                        f"for {len(x)} inputs.")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers (class indices); got dtype {y.dtype}.")
    return np.ascontiguousarray(x), y.astype(np.int64)


def _check_params(bers: list[float], maps: int, workers: int, batch_size: int, chunk_size: int) -> None:
    if not bers or any(not (0.0 <= b <= 1.0) or math.isnan(b) for b in bers):
        raise PassError(f"The 'bers' parameter of run_campaign must list bit error rates in [0, 1]; got {bers}.")
    for name, value in (("maps", maps), ("workers", workers), ("batch_size", batch_size), ("chunk_size", chunk_size)):
        if not isinstance(value, int) or value < 1:
            raise PassError(f"The '{name}' parameter of run_campaign must be an integer >= 1; got {value!r}.")


def vulnerability(
    artifact: Artifact | onnx.ModelProto,
    x: np.ndarray,
    y: np.ndarray,
    *,
    by: str = "layer",
    ber: float = 1e-5,
    maps: int = 100,
    seed: int = 0,
    fault: FaultModel | None = None,
    workers: int = 1,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Per-layer or per-bit vulnerability: one campaign at ``ber`` per group, faults confined to that group.

    ``by="layer"``: for each target tensor, faults land only in that tensor (Binomial over its own sites), so larger
    layers get more faults, as they would in memory. ``by="bit"``: for each bit position, faults land only at that
    bit of every target word (Binomial over the number of words holding that bit). Each row gives the group, its
    sites, and the accuracy, SDC, DUE and maps-with-SDC summaries of that campaign at ``ber``.
    """
    model = artifact.model if isinstance(artifact, Artifact) else artifact
    fault = fault or FaultModel()
    targets = FaultTargets.from_model(model, fault)
    if by == "layer":
        groups: list[tuple[str | int, FaultModel]] = [(n, dataclasses.replace(fault, targets=(n,), layers=None))
                                                      for n in targets.names]
    elif by == "bit":
        bits = sorted({int(b) for t in targets.tensors for b in t.starts})
        groups = [(b, dataclasses.replace(fault, bits=tuple(range(b, b + fault.burst)))) for b in bits]
    else:
        raise PassError(f"The 'by' parameter of vulnerability must be 'layer' or 'bit'; got {by!r}.")
    rows = []
    for group, group_fault in groups:
        result = run_campaign(model, x, y, bers=(ber,), maps=maps, seed=seed, fault=group_fault, workers=workers,
                              batch_size=batch_size)
        point = result.points()[0]
        rows.append({"group": group, "sites": result.sites, "ber": ber,
                     **{k: point[k] for k in ("faults", "accuracy", "sdc", "due", "maps_with_sdc")}})
    return rows
