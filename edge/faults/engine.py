"""One ONNX Runtime session per campaign: the targeted weights become graph inputs, faults go into the fed arrays.

Creating an ``InferenceSession`` re-optimises the whole graph, which costs more than running a small model on a few
inputs.
So the engine rewrites the model once, turning every targeted initializer into a graph input, builds one session,
and for each fault map XORs the bits into the same numpy arrays it feeds, runs, and XORs them back
(faults.md section 8). :func:`rebuild_and_run` is the slow reference it is checked against: a new model and a new
session for every map.

onnxruntime is imported here directly rather than through ``runtimes`` because ``edge`` base modules must not
import the engine folders (DESIGN.md layout). Sessions use ``ORT_ENABLE_EXTENDED`` without weight prepacking
(see :func:`create_session`), which is what makes the engine bit-identical to a rebuilt model.

Speed: the engine removes the per-map session build (about 3-4 ms for the reference SSVEP model) and makes a
faulty instance cost microseconds, but every map still needs one inference over the data. When that inference
dominates (e.g. 40 trials per map) the gain over rebuilding shrinks towards 1x; see benchmarks/fault_injection.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.errors import DataError, EngineError
from edge.feeds import TensorFormat, engine_message, onnx_formats, run_batched, to_input
from edge.faults.models import (
    FaultMap,
    FaultModel,
    FaultTargets,
    apply_fault_map,
    sample_fault_map,
)

IR_VERSION_LIMIT = 10  # the newest IR version onnxruntime 1.31 reads


def weights_as_inputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` where the initializers ``names`` are graph inputs instead (fed at every run)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.metadata_props[:]
    out.ir_version = min(out.ir_version, IR_VERSION_LIMIT)
    wanted = set(names)
    kept = [t for t in out.graph.initializer if t.name not in wanted]
    moved = {t.name: t for t in out.graph.initializer if t.name in wanted}
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    listed = {i.name for i in out.graph.input}
    for name in names:
        if name not in listed:
            tensor = moved[name]
            out.graph.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
    return out


def create_session(model: onnx.ModelProto, threads: int | None = None, optimization: str = "extended") -> Any:
    """An onnxruntime CPU session for ``model`` (IR version lowered to what onnxruntime reads).

    ``optimization`` is onnxruntime's graph optimization level: ``basic``, ``extended`` or ``all``. Engines use
    ``extended``: the extra layout rewrites of ``all`` (NCHWc) only apply to constant weights, so with weights fed
    as inputs ``extended`` runs the same kernels, and a model with the weights as constants built at ``extended``
    gives bit-identical outputs (that is how :func:`rebuild_and_run` checks the engine).
    """
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise EngineError(f"optimization must be one of {', '.join(levels)}; got {optimization!r}.")
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors reach the user whole in the EngineError, not also on stderr
    options.graph_optimization_level = levels[optimization]
    # Prepacking reorders constant weights for faster kernels; fed weights cannot be prepacked, so engines and the
    # reference both skip it and run the same kernels.
    options.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    plain.ir_version = min(plain.ir_version, IR_VERSION_LIMIT)
    try:
        return ort.InferenceSession(plain.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise EngineError(engine_message("onnxruntime refused the model", exc)) from None


def data_input(model: onnx.ModelProto) -> str:
    """The name of the model's one data input (graph inputs that are not initializers)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise DataError(f"fault campaigns feed models with one data input; this one has {len(inputs)} ({inputs}).")
    return inputs[0]


class WeightFaultEngine:
    """A model with its fault targets as graph inputs, one session, and fault maps applied in place."""

    def __init__(self, model: onnx.ModelProto, fault: FaultModel | None = None, *, threads: int | None = None,
                 batch_size: int = 256) -> None:
        self.fault = fault or FaultModel()
        self.targets = FaultTargets.from_model(model, self.fault)
        self.input_name = data_input(model)
        self.batch_size = batch_size
        self.session = create_session(weights_as_inputs(model, self.targets.names), threads)
        self._output = self.session.get_outputs()[0].name
        self._format = data_format(model, self.input_name)

    def sample(self, ber: float, seed: int | list[int]) -> FaultMap:
        """A fault map over this engine's targets (see :func:`edge.faults.models.sample_fault_map`)."""
        return sample_fault_map(self.targets, ber, seed)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The first output for every row of ``x`` with the weights as they are now."""
        return run_data(self.session, self._output, dict(self.targets.arrays), self._format, x, self.batch_size)

    def run_map(self, fault_map: FaultMap, x: np.ndarray) -> np.ndarray:
        """Outputs with ``fault_map`` applied; the weights are restored bit-exactly afterwards."""
        restore = apply_fault_map(self.targets.arrays, fault_map)
        try:
            return self.run(x)
        finally:
            restore.undo()


def corrupted_model(model: onnx.ModelProto, fault_map: FaultMap) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers carry ``fault_map`` (the model itself is left alone)."""
    faulty = onnx.ModelProto()
    faulty.CopyFrom(model)
    stored = {t.name: t for t in faulty.graph.initializer}
    missing = [name for name in fault_map.tensors if name not in stored]
    if missing:
        raise DataError(f"the fault map corrupts '{missing[0]}', which is not an initializer of the model.")
    arrays = {name: np.array(numpy_helper.to_array(stored[name])) for name in fault_map.tensors}
    apply_fault_map(arrays, fault_map)
    for name, array in arrays.items():
        stored[name].CopyFrom(numpy_helper.from_array(array, name))
    return faulty


def rebuild_and_run(model: onnx.ModelProto, fault_map: FaultMap, x: np.ndarray, *, threads: int | None = None,
                    batch_size: int = 256, optimization: str = "extended") -> np.ndarray:
    """The slow reference: write the faulty weights into a copy of the model, build a new session, run it.

    At the default ``optimization`` the outputs equal :meth:`WeightFaultEngine.run_map` bit for bit.
    """
    faulty = corrupted_model(model, fault_map)
    del faulty.metadata_props[:]
    session = create_session(faulty, threads, optimization)
    fmt = data_format(model, data_input(model))
    return run_data(session, session.get_outputs()[0].name, {}, fmt, x, batch_size)


def data_format(model: onnx.ModelProto, name: str) -> TensorFormat:
    """The data input's dtype, quantization and batch dimension, read from the graph."""
    return next(f for f in onnx_formats(model)[0] if f.name == name)


def run_data(session: Any, output: str, weights: dict[str, np.ndarray], fmt: TensorFormat, x: np.ndarray,
             batch_size: int) -> np.ndarray:
    """The first output for every trial of ``x`` (converted as edge.feeds says) with ``weights`` fed alongside.

    A fixed batch dimension runs in chunks of its size (last one padded), a symbolic one in chunks of ``batch_size``.
    """
    data = to_input(x, fmt)

    def once(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return session.run([output], {**weights, **feeds})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            given = ", ".join(f"'{name}' {v.dtype.name} {tuple(v.shape)}" for name, v in feeds.items())
            raise EngineError(engine_message(f"onnxruntime could not run the model on {given}", exc)) from None

    step = fmt.batch or batch_size
    return np.concatenate([run_batched(once, {fmt.name: data[i : i + step]}, fmt.batch)[0]
                           for i in range(0, len(data), step)])
