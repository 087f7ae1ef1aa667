"""Structured pruning: remove whole output channels (filters) of named Conv nodes and rewire consumers.

For each named Conv (in graph order) the ``ratio`` of filters with the smallest L1 norm go: the
Conv's weight and bias lose those output channels, and every consumer of its output is rewritten to
match, through any channel-wise op in between (``Relu``, ``LeakyRelu``, ``Elu``, ``Identity``, ``Sigmoid``,
``Tanh``, average and max pooling; ``BatchNormalization`` loses the channels' statistics too):

* a Conv (``group=1``) reading it loses the matching input channels of its weight;
* a depthwise Conv (one input channel per group, ``D`` filters each, as in EEGNet) loses the whole
  groups of the removed channels: their ``D`` filters and biases go, ``group`` shrinks, and the removal
  carries on through its own consumers, so EEGNet's temporal filters take their spatial filters, and the
  separable convolution's depthwise part, with them;
* ``Flatten(axis=1)`` followed by ``Gemm``/``MatMul`` loses the matching rows of the dense weight.
  Flatten orders features C x H x W, so channel ``c`` owns features ``c*H*W .. (c+1)*H*W - 1``; for
  Gemm these are columns of ``B`` when ``transB=1`` and rows when ``transB=0``.

Anything else downstream (a graph output, a Reshape, an Add joining two branches, a grouped Conv that
is not depthwise, a weight shared with another node) is refused with a PassError naming the node and why. Op types are
unchanged; shapes shrink, so MACs and dense-runtime latency go down. The result is checked with
``onnx.checker`` and shape inference.

>>> from converters.prune_channels import PruneChannels
>>> child = PruneChannels(ratio=0.5, nodes=["/time1/Conv", "/time2/Conv"])(artifact, None)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edge.artifact import Artifact
from edge.errors import PassError

__all__ = ["PruneChannels"]

log = logging.getLogger("edge")

CRITERIA = ("l1", "l2")
#: Ops that keep channel c in channel c (element-wise or spatial only).
_CHANNELWISE = {"Relu", "LeakyRelu", "Elu", "Identity", "Sigmoid", "Tanh", "AveragePool", "MaxPool"}


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


@dataclass
class PruneChannels:
    """Remove ``ratio`` of the output channels of each Conv in ``nodes``, smallest ``criterion`` norm first."""

    ratio: float = 0.5
    nodes: list[str] = field(default_factory=list)
    criterion: str = "l1"
    name: str = "prune-channels"

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise PassError(f"The 'ratio' parameter of {self.name} must be a float in (0, 1); got {self.ratio}.")
        if self.criterion not in CRITERIA:
            raise PassError(f"The 'criterion' parameter of {self.name} must be one of {', '.join(CRITERIA)}; "
                            f"got '{self.criterion}'.")
        if not self.nodes:
            raise PassError(f"The 'nodes' parameter of {self.name} must name at least one Conv node "
                            f"(e.g. [\"/time1/Conv\", \"/time2/Conv\"]); node names are shown by 'edge inspect'.")

    def params(self) -> dict[str, object]:
        """Parameters as recorded in provenance."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def __call__(self, artifact: Artifact, calibration: np.ndarray | None = None) -> Artifact:
        """Return a child with the filters removed and every consumer rewired; the parent is untouched."""
        model = onnx.ModelProto()
        model.CopyFrom(artifact.model)
        graph = model.graph
        by_name = {n.name: n for n in graph.node}
        unknown = [n for n in self.nodes if n not in by_name]
        if unknown:
            raise PassError(f"{self.name}: no node named '{unknown[0]}'; node names are shown by 'edge inspect'.")
        shapes = _spatial_sizes(model)
        order = [n.name for n in graph.node if n.name in set(self.nodes)]
        for node_name in order:
            kept, total = self._prune(graph, by_name[node_name], shapes)
            log.debug("%s: node '%s' keeps %d of %d output channels", self.name, node_name, kept, total)
        del graph.value_info[:]  # stale shapes; shape inference below writes the new ones
        try:
            onnx.checker.check_model(model)
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise PassError(f"{self.name}: the pruned graph fails the ONNX checks ({str(exc).splitlines()[0]}).") from None
        log.info("%s: %d Conv nodes pruned by %.0f %%", self.name, len(order), 100 * self.ratio)
        return artifact.derive(inferred, self.name, self.params())

    def _prune(self, graph: onnx.GraphProto, node: onnx.NodeProto, shapes: dict[str, int]) -> tuple[int, int]:
        where = f"{self.name}: node '{node.name}'"
        if node.op_type != "Conv":
            raise PassError(f"{where} is a {node.op_type}; only Conv filters can be pruned.")
        if _attr(node, "group", 1) != 1:
            raise PassError(f"{where} is a grouped Conv (group={_attr(node, 'group', 1)}); its filters cannot be removed alone.")
        initializers = {t.name: t for t in graph.initializer}
        weight = _own_initializer(graph, node, 1, initializers, where)
        bias = _own_initializer(graph, node, 2, initializers, where) if len(node.input) > 2 and node.input[2] else None
        values = numpy_helper.to_array(weight)
        total = values.shape[0]
        flat = np.abs(values.reshape(total, -1).astype(np.float64))
        norms = flat.sum(1) if self.criterion == "l1" else np.sqrt((flat ** 2).sum(1))
        drop = round(self.ratio * total)
        if drop < 1 or drop >= total:
            raise PassError(f"{where} has {total} filters; ratio {self.ratio} would remove {drop}, leaving none or all.")
        keep = np.sort(np.argsort(norms, kind="stable")[drop:])
        # Find and check every consumer before changing anything.
        edits = _consumer_edits(graph, node.output[0], keep, total, shapes, initializers, where)
        _set(weight, values[keep])
        if bias is not None:
            _set(bias, numpy_helper.to_array(bias)[keep])
        for edit in edits:
            edit()
        return len(keep), total


def _set(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), tensor.name))


def _slice(tensor: onnx.TensorProto, axis: int, index: np.ndarray) -> Callable[[], None]:
    """An edit keeping ``index`` along ``axis`` of ``tensor``, applied once every consumer has been checked."""
    return lambda: _set(tensor, np.take(numpy_helper.to_array(tensor), index, axis=axis))


def _set_group(node: onnx.NodeProto, groups: int) -> Callable[[], None]:
    def edit() -> None:
        next(a for a in node.attribute if a.name == "group").i = groups
    return edit


def _own_initializer(graph: onnx.GraphProto, node: onnx.NodeProto, slot: int,
                     initializers: dict[str, onnx.TensorProto], where: str) -> onnx.TensorProto:
    name = node.input[slot]
    if name not in initializers:
        raise PassError(f"{where}: input {slot} ('{name}') is not a constant initializer, so it cannot be sliced.")
    users = [n.name for n in graph.node if name in n.input]
    if len(users) > 1:
        raise PassError(f"{where}: weight '{name}' is shared with node '{next(u for u in users if u != node.name)}'.")
    if any(o.name == name for o in graph.output):
        raise PassError(f"{where}: weight '{name}' is also a graph output.")
    return initializers[name]


def _consumer_edits(graph: onnx.GraphProto, tensor: str, keep: np.ndarray, total: int, shapes: dict[str, int],
                    initializers: dict[str, onnx.TensorProto], where: str) -> list[Callable[[], None]]:
    """The edits (checked, not yet applied) every consumer of a pruned channel tensor needs."""
    if any(o.name == tensor for o in graph.output):
        raise PassError(f"{where}: its output '{tensor}' is a graph output, whose shape must not change.")
    consumers = [n for n in graph.node if tensor in n.input]
    edits: list[Callable[[], None]] = []
    for user in consumers:
        slot = list(user.input).index(tensor)
        if user.op_type in _CHANNELWISE and slot == 0:
            edits += _consumer_edits(graph, user.output[0], keep, total, shapes, initializers, where)
        elif user.op_type == "BatchNormalization" and slot == 0:
            for stat in range(1, 5):
                edits.append(_slice(_own_initializer(graph, user, stat, initializers, f"{where} feeds '{user.name}'"),
                                    0, keep))
            edits += _consumer_edits(graph, user.output[0], keep, total, shapes, initializers, where)
        elif user.op_type == "Conv" and slot == 0 and _attr(user, "group", 1) == 1:
            weight = _own_initializer(graph, user, 1, initializers, f"{where} feeds '{user.name}'")
            edits.append(_slice(weight, 1, keep))
        elif user.op_type == "Conv" and slot == 0:
            edits += _depthwise_edits(graph, user, keep, total, shapes, initializers, where)
        elif user.op_type == "Flatten" and _attr(user, "axis", 1) == 1:
            if tensor not in shapes:
                raise PassError(f"{where} feeds Flatten '{user.name}' but the spatial size of '{tensor}' is unknown.")
            size = shapes[tensor]
            rows = (keep[:, None] * size + np.arange(size)[None, :]).reshape(-1)
            edits += _dense_edits(graph, user, rows, total * size, initializers, where)
        else:
            raise PassError(f"{where} feeds {user.op_type} '{user.name}' (input {slot}), which this pass cannot "
                             f"rewire; it handles Conv, Flatten(axis=1) -> Gemm/MatMul and Relu-like ops in between.")
    return edits


def _depthwise_edits(graph: onnx.GraphProto, conv: onnx.NodeProto, keep: np.ndarray, total: int,
                     shapes: dict[str, int], initializers: dict[str, onnx.TensorProto],
                     where: str) -> list[Callable[[], None]]:
    """A grouped Conv with one input channel per group loses the groups of the removed channels, and passes
    the removal of their filters on to its own consumers."""
    groups = _attr(conv, "group", 1)
    here = f"{where} feeds '{conv.name}'"
    weight = _own_initializer(graph, conv, 1, initializers, here)
    if groups != total or weight.dims[1] != 1 or weight.dims[0] % groups:
        raise PassError(f"{where} feeds grouped Conv '{conv.name}' (group={groups}), which is not depthwise over "
                        f"its {total} input channels, so its input channels cannot be removed alone.")
    per_group = weight.dims[0] // groups
    rows = (keep[:, None] * per_group + np.arange(per_group)[None, :]).reshape(-1)
    edits = [_slice(weight, 0, rows), _set_group(conv, len(keep))]
    if len(conv.input) > 2 and conv.input[2]:
        edits.append(_slice(_own_initializer(graph, conv, 2, initializers, here), 0, rows))
    return edits + _consumer_edits(graph, conv.output[0], rows, weight.dims[0], shapes, initializers, here)


def _dense_edits(graph: onnx.GraphProto, flatten: onnx.NodeProto, rows: np.ndarray, features: int,
                 initializers: dict[str, onnx.TensorProto], where: str) -> list[Callable[[], None]]:
    tensor = flatten.output[0]
    if any(o.name == tensor for o in graph.output):
        raise PassError(f"{where}: Flatten '{flatten.name}' output is a graph output, whose shape must not change.")
    edits = []
    for user in (n for n in graph.node if tensor in n.input):
        slot = list(user.input).index(tensor)
        if user.op_type == "Gemm" and slot == 0 and not _attr(user, "transA", 0):
            axis = 1 if _attr(user, "transB", 0) else 0
        elif user.op_type == "MatMul" and slot == 0:
            axis = 0
        else:
            raise PassError(f"{where} feeds Flatten '{flatten.name}' -> {user.op_type} '{user.name}' (input {slot}), "
                             f"which this pass cannot rewire; it handles Gemm (transA=0) and MatMul reading the flattened features.")
        weight = _own_initializer(graph, user, 1, initializers, f"{where} feeds '{user.name}'")
        if len(weight.dims) != 2 or weight.dims[axis] != features:
            raise PassError(f"{where}: weight of '{user.name}' has shape {list(weight.dims)}, expected {features} "
                            f"flattened features along axis {axis}.")
        edits.append(_slice(weight, axis, rows))
    return edits


def _spatial_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Product of the non-batch, non-channel dims of every 4-D-ish tensor whose shape inference knows it."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        # Unknown shapes only matter where a Flatten needs them, and are refused there.
        return {}
    sizes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) >= 3 and all(d.HasField("dim_value") for d in dims[2:]):
            sizes[value.name] = int(np.prod([d.dim_value for d in dims[2:]]))
    return sizes


def finetune_pruned_ssvep(
    artifact: Artifact,
    data: str | None = None,
    *,
    epochs: int = 20,
    lr: float = 1e-4,
    batch_size: int = 100,
    seed: int = 0,
    threads: int | None = None,
    on_epoch: Any = None,
) -> Artifact:
    """Fine-tune a channel-pruned Guney SSVEP network with the family's training recipe (needs PyTorch).

    Rebuilds the smaller PyTorch network from the pruned weights (the time convolutions and the dense
    layer at their pruned widths), trains it ``epochs`` epochs on ``data`` (default: the artifact's
    recorded ``training_data``) with Adam and the stage-1 dropouts of
    :mod:`edge.families.ssvep.train`, and re-exports it. ``on_epoch(epoch, net)`` is called after each
    epoch (e.g. to watch held-out accuracy). Provenance records ``finetune-ssvep``.
    """
    from edge.data.registry import load_dataset
    from edge.families.ssvep.model import _torch, build_guney_net
    from edge.families.ssvep.train import TrainConfig, finetune
    from edge.families.torch_common import export_graph

    torch = _torch()
    where = "finetune-ssvep"
    if artifact.meta.family != "ssvep":
        raise PassError(f"{where} fine-tunes SSVEP networks; this artifact's family is '{artifact.meta.family}'.")
    w = {t.name: numpy_helper.to_array(t) for t in artifact.model.graph.initializer}
    expected = ["sub_band.weight", "channel.weight", "channel.bias", "time1.weight", "time1.bias",
                "time2.weight", "time2.bias", "fc.weight", "fc.bias"]
    missing = [n for n in expected if n not in w]
    if missing:
        raise PassError(f"{where}: the graph is not the Guney network as exported by this toolkit (no '{missing[0]}').")
    if any(n.op_type not in ("Conv", "Relu", "Flatten", "Gemm") for n in artifact.model.graph.node):
        raise PassError(f"{where}: the graph holds ops other than Conv/Relu/Flatten/Gemm (already quantized?).")
    data = data or artifact.meta.extra.get("training_data")
    if not data:
        raise PassError(f"{where}: no training data given and none recorded in the artifact's metadata.")
    _, sub_bands, channels, samples = (d if isinstance(d, int) else 1 for d in artifact.meta.inputs[0].shape)
    classes = w["fc.weight"].shape[0]
    net = build_guney_net(channels=channels, samples=samples, sub_bands=sub_bands, classes=classes,
                          spatial_filters=w["channel.weight"].shape[0])
    nn = torch.nn
    t1, t2 = w["time1.weight"], w["time2.weight"]
    net.time1 = nn.Conv2d(t1.shape[1], t1.shape[0], tuple(t1.shape[2:]), stride=(1, t1.shape[3]))
    net.time2 = nn.Conv2d(t2.shape[1], t2.shape[0], tuple(t2.shape[2:]), padding="same")
    net.fc = nn.Linear(w["fc.weight"].shape[1], classes)
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(torch.from_numpy(np.array(w[name], dtype=np.float32)))
    dataset = load_dataset(data, artifact.meta)
    config = TrainConfig(lr=lr, seed=seed, threads=threads, finetune_epochs=epochs, finetune_batch_size=batch_size,
                         finetune_dropout=net.drop1.p)
    tuned = finetune(net, dataset.x, dataset.y, config, on_epoch=on_epoch)
    model = export_graph(tuned, artifact.meta)
    onnx.checker.check_model(model)
    params = {"data": data, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    log.info("%s: %d epochs on %s", where, epochs, data)
    return artifact.derive(model, where, params)
