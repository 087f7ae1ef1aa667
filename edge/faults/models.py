"""Fault models for weight memory: where faults may land, how many, and how they corrupt the stored bits.

A fault hits a weight *as it is stored*: the IEEE-754 pattern of a float32 initializer, the int8 initializer
behind a ``DequantizeLinear`` in a QDQ model, an int32 bias, or a byte of the packed 4-bit weights of
``MatMulNBits``. All bit operations run on an unsigned-integer view of the numpy array, so a fault map is
applied in place and undone exactly:

>>> targets = FaultTargets.from_model(model, FaultModel())
>>> fault_map = sample_fault_map(targets, ber=1e-5, seed=[0, 2, 7])
>>> with injected(targets.arrays, fault_map):
...     ...  # run the model on targets.arrays

**What a BER means here.** A *site* is one (word, lowest bit) place where a fault of ``burst`` adjacent bits can
start, restricted to the allowed bit class. The number of faults in a map is drawn as
``k ~ Binomial(number of sites, ber)`` over the whole target set and the ``k`` sites are drawn uniformly without
replacement, so a small tensor is hit in proportion to its size (never ``floor(N * ber)`` per layer, never a loop
over every weight). With single-bit faults and no bit restriction, a site is one stored bit and ``ber`` is the
bit error rate per stored bit (FT-ClipAct, faults.md section 1.2).
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edge.errors import DataError, PassError

KINDS = ("flip", "stuck-at-0", "stuck-at-1")
BIT_CLASSES = ("all", "sign", "exponent", "mantissa")
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "MatMulNBits")

# ONNX element type -> (stored bits, sign bits, exponent bits). Integer types have no exponent: "sign" is the
# most significant bit and "mantissa" is every other (value) bit.
Layout = tuple[int, tuple[int, ...], tuple[int, ...]]
_LAYOUTS: dict[int, Layout] = {
    TensorProto.FLOAT: (32, (31,), tuple(range(23, 31))),
    TensorProto.FLOAT16: (16, (15,), tuple(range(10, 15))),
    TensorProto.DOUBLE: (64, (63,), tuple(range(52, 63))),
    TensorProto.INT8: (8, (7,), ()),
    TensorProto.UINT8: (8, (7,), ()),
    TensorProto.INT16: (16, (15,), ()),
    TensorProto.UINT16: (16, (15,), ()),
    TensorProto.INT32: (32, (31,), ()),
}
#: The same layouts by numpy dtype name, for weights stored outside ONNX (TFLite buffers, device memory).
LAYOUTS_BY_DTYPE: dict[str, Layout] = {
    np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t)).name: layout for t, layout in _LAYOUTS.items()
}
_PACKED_INT4: Layout = (8, (3, 7), ())  # two 4-bit values per byte (MatMulNBits input B)
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


@dataclass(frozen=True)
class FaultModel:
    """How faults corrupt stored weights and which weights they may hit.

    kind: ``flip`` (transient or permanent bit flip, XOR), ``stuck-at-0`` or ``stuck-at-1``.
    bits: ``all``, ``sign``, ``exponent`` or ``mantissa`` (integer types: sign = MSB, mantissa = the other bits,
        no exponent bits), or an explicit tuple of bit positions (0 = least significant).
    burst: adjacent bits corrupted by one fault (1 = single-bit upset); all of them lie in one word and in the
        allowed bit class.
    targets: ``weights`` (the weights and biases Conv/ConvTranspose/Gemm/MatMul/MatMulNBits read directly or
        through a DequantizeLinear), ``all`` (those plus every floating-point initializer, e.g. clipping
        thresholds, scales) or a tuple of initializer names.
    layers: keep only targets that are read by these nodes or that have these initializer names.
    """

    kind: str = "flip"
    bits: str | tuple[int, ...] = "all"
    burst: int = 1
    targets: str | tuple[str, ...] = "weights"
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PassError(f"The 'kind' parameter of FaultModel must be one of {', '.join(KINDS)}; got {self.kind!r}.")
        if isinstance(self.bits, str):
            if self.bits not in BIT_CLASSES:
                raise PassError(f"The 'bits' parameter of FaultModel must be one of {', '.join(BIT_CLASSES)} or a "
                                f"tuple of bit positions; got {self.bits!r}.")
        else:
            bits = tuple(int(b) for b in self.bits)
            if not bits or min(bits) < 0 or max(bits) > 63:
                raise PassError(f"The 'bits' parameter of FaultModel must list bit positions in [0, 63]; "
                                f"got {self.bits!r}.")
            object.__setattr__(self, "bits", tuple(sorted(set(bits))))
        if not isinstance(self.burst, int) or self.burst < 1:
            raise PassError(f"The 'burst' parameter of FaultModel must be an integer >= 1; got {self.burst!r}.")
        if isinstance(self.targets, str):
            if self.targets not in ("weights", "all"):
                raise PassError("The 'targets' parameter of FaultModel must be 'weights', 'all' or a tuple of "
                                f"initializer names; got {self.targets!r}.")
        else:
            object.__setattr__(self, "targets", tuple(self.targets))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON parameters (tuples become lists)."""
        doc = asdict(self)
        for key in ("bits", "targets", "layers"):
            if isinstance(doc[key], tuple):
                doc[key] = list(doc[key])
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FaultModel:
        """Inverse of :meth:`to_dict`."""
        doc = dict(doc)
        for key in ("bits", "targets", "layers"):
            if isinstance(doc.get(key), list):
                doc[key] = tuple(doc[key])
        return cls(**doc)


class Fault(NamedTuple):
    """One fault: the tensor, the flat element index, the lowest corrupted bit and the kind."""

    tensor: str
    index: int
    bit: int
    kind: str


@dataclass
class FaultMap:
    """A seeded, replayable set of faults; stored as arrays so that thousands of faults cost microseconds.

    ``tensor[i]`` indexes ``tensors``; fault i corrupts bits ``bit[i] .. bit[i] + burst - 1`` of element
    ``index[i]`` (flat, C order) of that tensor, in the way ``kind`` says. ``seed`` is the integer sequence
    the generator was seeded with and ``ber`` and ``model`` the parameters it was drawn under (for the record;
    replay only needs the faults).
    """

    tensors: list[str]
    tensor: np.ndarray
    index: np.ndarray
    bit: np.ndarray
    kind: str = "flip"
    burst: int = 1
    seed: list[int] = field(default_factory=list)
    ber: float | None = None
    model: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def faults(self) -> list[Fault]:
        """The faults as (tensor name, flat index, bit, kind) tuples."""
        return [Fault(self.tensors[t], int(i), int(b), self.kind) for t, i, b in zip(self.tensor, self.index, self.bit)]

    def to_json(self) -> str:
        """JSON with one ``[tensor, index, bit, kind]`` row per fault plus the parameters."""
        return json.dumps({
            "kind": self.kind, "burst": self.burst, "seed": [int(s) for s in self.seed], "ber": self.ber,
            "model": self.model, "faults": [list(f) for f in self.faults],
        })

    @classmethod
    def from_json(cls, text: str) -> FaultMap:
        """Read a map written by :meth:`to_json` (or by another tool in the same format)."""
        try:
            doc = json.loads(text)
            rows = doc["faults"]
            kinds = {r[3] for r in rows} | {doc.get("kind", "flip")}
            names = list(dict.fromkeys(r[0] for r in rows))
            ids = {n: i for i, n in enumerate(names)}
            tensor = np.array([ids[r[0]] for r in rows], dtype=np.int32)
            index = np.array([r[1] for r in rows], dtype=np.int64)
            bit = np.array([r[2] for r in rows], dtype=np.int16)
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise DataError("not a fault map: expected JSON with a 'faults' list of [tensor, index, bit, kind] "
                            f"({exc}).") from None
        if len(kinds) != 1 or next(iter(kinds)) not in KINDS:
            raise DataError(f"a fault map holds faults of one kind among {', '.join(KINDS)}; got {sorted(kinds)}.")
        return cls(names, tensor, index, bit, kind=kinds.pop(), burst=int(doc.get("burst", 1)),
                   seed=list(doc.get("seed", [])), ber=doc.get("ber"), model=doc.get("model", {}))


@dataclass
class TargetTensor:
    """One fault target: its stored array (writable copy), its stored width in bits, and where faults may start."""

    name: str
    array: np.ndarray
    width: int
    starts: np.ndarray  # allowed lowest bit positions of a fault, ascending

    @property
    def sites(self) -> int:
        """Number of places a fault can start in this tensor."""
        return self.array.size * len(self.starts)


class FaultTargets:
    """The tensors a fault model may hit, copied out of a model as writable numpy arrays."""

    def __init__(self, tensors: list[TargetTensor], fault: FaultModel) -> None:
        if not tensors:
            raise PassError("the fault model selects no tensor with a bit it may corrupt; check 'targets', 'layers' "
                            "and 'bits' (integer weights have no exponent bits).")
        self.tensors = tensors
        self.fault = fault
        self.names = [t.name for t in tensors]
        self.arrays = {t.name: t.array for t in tensors}
        self._by_name = {t.name: t for t in tensors}
        self._offsets = np.cumsum([0] + [t.sites for t in tensors])

    @classmethod
    def from_model(cls, model: onnx.ModelProto, fault: FaultModel | None = None) -> FaultTargets:
        """Select the targets of ``fault`` in ``model`` and copy them into writable arrays."""
        fault = fault or FaultModel()
        selected = select_targets(model, fault)
        inits = {t.name: t for t in model.graph.initializer}
        tensors = []
        for name, layout in selected:
            array = np.ascontiguousarray(numpy_helper.to_array(inits[name])).copy()
            width, sign, exponent = layout
            starts = bit_starts(fault, width, sign, exponent)
            if len(starts):
                tensors.append(TargetTensor(name, array, width, starts))
        return cls(tensors, fault)

    @property
    def sites(self) -> int:
        """Number of places a fault can start over all targets (the Binomial's n)."""
        return int(self._offsets[-1])

    @property
    def stored_bits(self) -> int:
        """Total stored bits of the targets."""
        return int(sum(t.array.size * t.width for t in self.tensors))

    def __getitem__(self, name: str) -> TargetTensor:
        return self._by_name[name]

    def locate(self, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tensor id, flat index and lowest bit of each global site number."""
        sites = np.asarray(sites, dtype=np.int64)
        tensor = np.searchsorted(self._offsets, sites, side="right") - 1
        index = np.empty(len(sites), np.int64)
        bit = np.empty(len(sites), np.int16)
        for t in np.unique(tensor):
            rows = tensor == t
            local = sites[rows] - self._offsets[t]
            starts = self.tensors[t].starts
            index[rows] = local // len(starts)
            bit[rows] = starts[local % len(starts)]
        return tensor.astype(np.int32), index, bit


def select_targets(model: onnx.ModelProto, fault: FaultModel) -> list[tuple[str, Layout]]:
    """Names (in graph order) and bit layouts of the initializers ``fault`` may hit."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, set[str]] = {}
    layouts: dict[str, Layout] = {}

    def stored(name: str) -> str | None:
        """The initializer behind an input: itself, or the quantized one a DequantizeLinear reads."""
        if name in inits:
            return name
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
            return node.input[0]
        return None

    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        for position, name in enumerate(node.input):
            source = stored(name) if name else None
            if source is None or inits[source].data_type not in _LAYOUTS:
                continue
            if node.op_type == "MatMulNBits" and position != 1:
                continue  # scales and zero points are metadata; B holds the packed 4-bit weights
            layouts[source] = _PACKED_INT4 if node.op_type == "MatMulNBits" else _LAYOUTS[inits[source].data_type]
            readers.setdefault(source, set()).add(node.name)
            if source != name:
                readers[source].add(producers[name].name)

    if isinstance(fault.targets, tuple):
        chosen = []
        for name in fault.targets:
            if name not in inits:
                close = difflib.get_close_matches(name, list(inits), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise PassError(f"The fault model targets '{name}', which is not an initializer of the model.{hint}")
            if inits[name].data_type not in _LAYOUTS:
                raise PassError(f"The fault model targets '{name}', whose element type "
                                f"{TensorProto.DataType.Name(inits[name].data_type)} it cannot corrupt.")
            layouts.setdefault(name, _LAYOUTS[inits[name].data_type])
            chosen.append(name)
    else:
        chosen = [name for name in inits if name in layouts]
        if fault.targets == "all":
            chosen = [name for name in inits if name in layouts or inits[name].data_type in _FLOATS]
            for name in chosen:
                layouts.setdefault(name, _LAYOUTS[inits[name].data_type])

    if fault.layers is not None:
        nodes = {n.name for n in model.graph.node}
        unknown = [n for n in fault.layers if n not in nodes and n not in inits]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(nodes) + list(inits), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise PassError(f"The 'layers' parameter of FaultModel names '{unknown[0]}', which is neither a node nor "
                            f"an initializer of the model.{hint}")
        wanted = set(fault.layers)
        all_readers = {name: readers.get(name, set()) | {n.name for n in model.graph.node if name in n.input}
                       for name in chosen}
        chosen = [name for name in chosen if name in wanted or all_readers[name] & wanted]
    return [(name, layouts[name]) for name in chosen]


def bit_starts(fault: FaultModel, width: int, sign: tuple[int, ...], exponent: tuple[int, ...]) -> np.ndarray:
    """Lowest bit positions at which a ``fault.burst``-bit fault stays in the allowed class of a ``width``-bit word."""
    if fault.bits == "all":
        allowed = set(range(width))
    elif fault.bits == "sign":
        allowed = set(sign)
    elif fault.bits == "exponent":
        allowed = set(exponent)
    elif fault.bits == "mantissa":
        allowed = set(range(width)) - set(sign) - set(exponent)
    else:
        allowed = {b for b in fault.bits if b < width}
    starts = [s for s in sorted(allowed) if all(b in allowed for b in range(s, s + fault.burst))]
    return np.array(starts, dtype=np.int16)


def sample_fault_map(
    targets: FaultTargets, ber: float, seed: int | Sequence[int] = 0, *, count: int | None = None
) -> FaultMap:
    """Draw ``k ~ Binomial(targets.sites, ber)`` faults (or exactly ``count``) at distinct uniform sites.

    ``seed`` (an int or a sequence of ints, e.g. ``[campaign seed, ber index, map index]``) seeds a
    ``numpy.random.SeedSequence``, so the same seed and targets give the same map on every machine.
    """
    if not 0.0 <= ber <= 1.0:
        raise PassError(f"The bit error rate must be in [0, 1]; got {ber!r}.")
    seed_list = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
    rng = np.random.default_rng(np.random.SeedSequence(seed_list))
    n = targets.sites
    k = int(rng.binomial(n, ber)) if count is None else int(count)
    if not 0 <= k <= n:
        raise PassError(f"A fault map cannot hold {k} faults: the targets have {n} fault sites.")
    sites = np.sort(rng.choice(n, size=k, replace=False)) if k else np.empty(0, np.int64)
    tensor, index, bit = targets.locate(sites)
    fault = targets.fault
    return FaultMap(list(targets.names), tensor, index, bit, kind=fault.kind, burst=fault.burst, seed=seed_list,
                    ber=float(ber), model=fault.to_dict())


class Restore:
    """What :func:`apply_fault_map` needs to undo a map: XOR masks for flips, saved words for stuck-at faults."""

    def __init__(self, kind: str, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.kind = kind
        self.parts = parts  # (unsigned view, indices, masks for flips or saved words for stuck-at)
        self.done = False

    def undo(self) -> None:
        """Put back the exact stored bits (a second XOR, or the saved words); safe to call twice."""
        if self.done:
            return
        for view, index, data in self.parts:
            if self.kind == "flip":
                np.bitwise_xor.at(view, index, data)
            else:
                view[index] = data
        self.done = True


def apply_fault_map(arrays: dict[str, np.ndarray], fault_map: FaultMap) -> Restore:
    """Corrupt ``arrays`` in place as ``fault_map`` says; call ``.undo()`` on the result to restore them bit-exactly."""
    parts = []
    ones = np.uint64(0xFFFFFFFFFFFFFFFF) >> np.uint64(64 - fault_map.burst)
    masks_all = ones << fault_map.bit.astype(np.uint64)
    for t in np.unique(fault_map.tensor):
        name = fault_map.tensors[t]
        if name not in arrays:
            raise DataError(f"the fault map corrupts tensor '{name}', which is not among the targets "
                            f"({', '.join(list(arrays)[:5])}...).")
        array = arrays[name]
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise DataError(f"tensor '{name}' must be a writable C-contiguous array to take faults in place.")
        view = array.reshape(-1).view(_unsigned(array))
        rows = fault_map.tensor == t
        index = fault_map.index[rows]
        if len(index) and (index.min() < 0 or index.max() >= view.size):
            raise DataError(f"the fault map indexes element {int(index.max())} of '{name}', which has {view.size}.")
        if int(fault_map.bit[rows].max()) + fault_map.burst > view.dtype.itemsize * 8:
            raise DataError(f"the fault map corrupts bit {int(fault_map.bit[rows].max()) + fault_map.burst - 1} of "
                            f"'{name}', whose words have {view.dtype.itemsize * 8} bits.")
        masks = masks_all[rows].astype(view.dtype)
        if fault_map.kind == "flip":
            np.bitwise_xor.at(view, index, masks)
            parts.append((view, index, masks))
        else:
            words = np.unique(index)
            merged = np.zeros(len(words), view.dtype)
            np.bitwise_or.at(merged, np.searchsorted(words, index), masks)
            parts.append((view, words, view[words].copy()))
            if fault_map.kind == "stuck-at-1":
                view[words] |= merged
            else:
                view[words] &= ~merged
    return Restore(fault_map.kind, parts)


@contextlib.contextmanager
def injected(arrays: dict[str, np.ndarray], fault_map: FaultMap) -> Iterator[dict[str, np.ndarray]]:
    """Context manager: ``arrays`` carry the faults inside the block and their exact original bits after it."""
    restore = apply_fault_map(arrays, fault_map)
    try:
        yield arrays
    finally:
        restore.undo()


def _unsigned(array: np.ndarray) -> np.dtype:
    """The unsigned integer type of the same width, for bit operations on the stored pattern."""
    return np.dtype(f"uint{array.dtype.itemsize * 8}")


def fault_tensor_bits(fault_map: FaultMap) -> dict[str, Any]:
    """How many faults hit each tensor and each lowest-bit position: a quick summary of a map."""
    names, counts = np.unique(fault_map.tensor, return_counts=True)
    bits, bit_counts = np.unique(fault_map.bit, return_counts=True)
    return {
        "tensors": {fault_map.tensors[int(t)]: int(c) for t, c in zip(names, counts)},
        "bits": {int(b): int(c) for b, c in zip(bits, bit_counts)},
    }
