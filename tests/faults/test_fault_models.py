"""Fault models: target selection, Binomial fault counts, bit classes, apply/undo, and replayable fault maps."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import tiny_conv_model
from onnx import TensorProto, helper, numpy_helper
from scipy import stats

from edge.artifact import Artifact
from edge.errors import DataError, PassError
from edge.faults import FaultMap, FaultModel, FaultTargets, apply_fault_map, injected, sample_fault_map

SIGN, EXPONENT, MANTISSA = 0x8000_0000, 0x7F80_0000, 0x007F_FFFF


@pytest.fixture(scope="module")
def int8_reference(reference: Artifact) -> Artifact:
    """The reference model statically quantized to int8 QDQ (int8 weights behind DequantizeLinear, int32 biases)."""
    from converters.quantize import QuantizeInt8
    from edge.data.registry import load_dataset

    block = load_dataset("synthetic-ssvep:subjects=31-31,blocks=1,seed=0", reference.meta)
    return QuantizeInt8(exclude=[])(reference, block.x)


def clipped_model() -> onnx.ModelProto:
    """The tiny model with its Relu replaced by Clip(0, T): T is a float initializer, a fault site under 'all'."""
    model = tiny_conv_model()
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.name = "Clip", "clip"
    relu.input.extend(["clip_min", "clip_max"])
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.0, np.float32), "clip_min"),
                                    numpy_helper.from_array(np.array(6.0, np.float32), "clip_max")])
    return model


def bits_of(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.reshape(-1).view(f"uint{v.dtype.itemsize * 8}").copy() for k, v in arrays.items()}


def test_default_targets_are_the_weights_and_biases_of_conv_gemm_matmul() -> None:
    targets = FaultTargets.from_model(tiny_conv_model())
    assert targets.names == ["w", "b", "fc", "fc_b"]
    assert targets.sites == targets.stored_bits == 32 * (18 + 3 + 72 + 4)


def test_all_targets_include_clipping_thresholds_and_names_can_be_listed() -> None:
    model = clipped_model()
    assert FaultTargets.from_model(model).names == ["w", "b", "fc", "fc_b"]
    assert FaultTargets.from_model(model, FaultModel(targets="all")).names == ["w", "b", "fc", "fc_b", "clip_min",
                                                                                "clip_max"]
    assert FaultTargets.from_model(model, FaultModel(targets=("clip_max",))).names == ["clip_max"]
    assert FaultTargets.from_model(model, FaultModel(layers=("conv",))).names == ["w", "b"]
    assert FaultTargets.from_model(model, FaultModel(layers=("fc_b",))).names == ["fc_b"]
    with pytest.raises(PassError, match="'clip_mx', which is not an initializer of the model. Did you mean 'clip_max'"):
        FaultTargets.from_model(model, FaultModel(targets=("clip_mx",)))
    with pytest.raises(PassError, match="names 'conv2', which is neither a node nor an initializer"):
        FaultTargets.from_model(model, FaultModel(layers=("conv2",)))


def test_quantized_models_expose_their_int8_weights_and_int32_biases(int8_reference) -> None:
    targets = FaultTargets.from_model(int8_reference.model)
    dtypes = {t.name: (t.array.dtype, t.width) for t in targets.tensors}
    assert dtypes["fc.weight_quantized"] == (np.int8, 8)
    assert dtypes["fc.bias_quantized"] == (np.int32, 32)
    assert all(name.endswith("_quantized") for name in targets.names)
    assert len(targets.names) == 9  # 5 weights and 4 biases; scales and zero points are not weights
    with pytest.raises(PassError, match="integer weights have no exponent bits"):
        FaultTargets.from_model(int8_reference.model, FaultModel(bits="exponent"))


def test_bad_fault_model_parameters_are_refused() -> None:
    with pytest.raises(PassError, match="'kind' parameter of FaultModel must be one of flip, stuck-at-0, stuck-at-1"):
        FaultModel(kind="stuck")
    with pytest.raises(PassError, match="'bits' parameter"):
        FaultModel(bits="exp")
    with pytest.raises(PassError, match="'burst' parameter"):
        FaultModel(burst=0)
    assert FaultModel(bits=[30, 23, 30]).bits == (23, 30)


def test_fault_count_is_binomial_and_small_tensors_are_hit_in_proportion() -> None:
    targets = FaultTargets.from_model(tiny_conv_model())  # 97 words: w 18, b 3, fc 72, fc_b 4
    ber, maps = 1e-3, 3000
    samples = [sample_fault_map(targets, ber, seed=[7, m]) for m in range(maps)]
    counts = np.array([len(s) for s in samples])
    n = targets.sites
    assert counts.mean() == pytest.approx(n * ber, rel=0.05)
    assert counts.var() == pytest.approx(n * ber * (1 - ber), rel=0.1)
    observed = np.bincount(counts, minlength=12)[:12]
    expected = stats.binom.pmf(np.arange(12), n, ber) * maps
    assert stats.chisquare(observed[:9], expected[:9] * observed[:9].sum() / expected[:9].sum()).pvalue > 0.001
    hits = np.bincount(np.concatenate([s.tensor for s in samples]), minlength=4)
    sizes = np.array([18, 3, 72, 4])
    assert stats.chisquare(hits, sizes / sizes.sum() * hits.sum()).pvalue > 0.001
    assert hits[1] > 100  # the 3-element bias gets its share (never floor(N * ber) = 0 per layer)
    bits = np.bincount(np.concatenate([s.bit for s in samples]), minlength=32)
    assert stats.chisquare(bits).pvalue > 0.001  # every bit position equally likely
    for s in samples[:200]:  # positions drawn without replacement
        keys = s.tensor.astype(np.int64) * 10**6 + s.index * 64 + s.bit
        assert len(np.unique(keys)) == len(keys)


def test_same_seed_same_map_and_fixed_count() -> None:
    targets = FaultTargets.from_model(tiny_conv_model())
    a, b = sample_fault_map(targets, 0.01, seed=[1, 2, 3]), sample_fault_map(targets, 0.01, seed=[1, 2, 3])
    assert a.faults == b.faults and a.seed == [1, 2, 3]
    assert sample_fault_map(targets, 0.01, seed=[1, 2, 4]).faults != a.faults
    assert len(sample_fault_map(targets, 0.0, seed=5, count=1)) == 1
    assert len(sample_fault_map(targets, 0.0, seed=5)) == 0


@pytest.mark.parametrize("kind", ["flip", "stuck-at-0", "stuck-at-1"])
@pytest.mark.parametrize("burst", [1, 3])
def test_apply_and_undo_restore_every_bit(kind: str, burst: int, int8_reference) -> None:
    for model in (tiny_conv_model(), int8_reference.model):
        targets = FaultTargets.from_model(model, FaultModel(kind=kind, burst=burst))
        before = bits_of(targets.arrays)
        fault_map = sample_fault_map(targets, 0.02, seed=11)  # dense enough that faults share words
        assert len(np.unique(fault_map.tensor * 10**7 + fault_map.index)) < len(fault_map)
        restore = apply_fault_map(targets.arrays, fault_map)
        during = bits_of(targets.arrays)
        changed = sum(int(np.sum(during[k] != before[k])) for k in before)
        assert changed > 0
        restore.undo()
        restore.undo()  # harmless twice
        after = bits_of(targets.arrays)
        assert all(np.array_equal(after[k], before[k]) for k in before)


def test_stuck_at_only_sets_or_clears_the_faulted_bits() -> None:
    for kind in ("stuck-at-0", "stuck-at-1"):
        targets = FaultTargets.from_model(tiny_conv_model(), FaultModel(kind=kind))
        before = bits_of(targets.arrays)
        fault_map = sample_fault_map(targets, 0.05, seed=3)
        allowed = {k: np.zeros_like(v) for k, v in before.items()}
        for fault in fault_map.faults:
            allowed[fault.tensor][fault.index] |= np.uint32(1) << np.uint32(fault.bit)
        with injected(targets.arrays, fault_map):
            during = bits_of(targets.arrays)
        for name in before:
            diff = during[name] ^ before[name]
            assert not np.any(diff & ~allowed[name])  # nothing outside the faulted bits moved
            if kind == "stuck-at-1":
                assert np.all(during[name] & allowed[name] == allowed[name])
            else:
                assert not np.any(during[name] & allowed[name])
        assert all(np.array_equal(bits_of(targets.arrays)[k], before[k]) for k in before)


@pytest.mark.parametrize(("bits", "mask"), [("sign", SIGN), ("exponent", EXPONENT), ("mantissa", MANTISSA),
                                            ((30,), 1 << 30)])
def test_bit_classes_touch_only_their_bits(bits: str, mask: int) -> None:
    targets = FaultTargets.from_model(tiny_conv_model(), FaultModel(bits=bits))
    assert targets.sites == 97 * mask.bit_count()
    before = bits_of(targets.arrays)
    fault_map = sample_fault_map(targets, 0.05, seed=9)
    assert len(fault_map) > 0
    with injected(targets.arrays, fault_map):
        during = bits_of(targets.arrays)
    diff = np.concatenate([during[k] ^ before[k] for k in before])
    assert np.any(diff) and not np.any(diff & ~np.uint32(mask))


def test_int8_sign_and_mantissa_classes(int8_reference) -> None:
    targets = FaultTargets.from_model(int8_reference.model, FaultModel(bits="sign"))
    assert {int(t.starts[0]) for t in targets.tensors} == {7, 31}  # MSB of int8 weights and int32 biases
    fault_map = sample_fault_map(targets, 1e-3, seed=0)
    assert set(fault_map.bit.tolist()) <= {7, 31}
    assert all(f.bit == 7 for f in fault_map.faults if f.tensor.endswith("weight_quantized"))
    mantissa = FaultTargets.from_model(int8_reference.model, FaultModel(bits="mantissa"))
    assert all(t.starts.tolist() == list(range(t.width - 1)) for t in mantissa.tensors)


def test_burst_flips_adjacent_bits_in_one_word() -> None:
    targets = FaultTargets.from_model(tiny_conv_model(), FaultModel(burst=2, bits="exponent"))
    assert targets.tensors[0].starts.tolist() == list(range(23, 30))
    before = bits_of(targets.arrays)
    fault_map = sample_fault_map(targets, 0.0, seed=1, count=1)
    with injected(targets.arrays, fault_map):
        diff = np.concatenate([bits_of(targets.arrays)[k] ^ before[k] for k in before])
    (word,) = diff[diff != 0]
    bit = int(fault_map.bit[0])
    assert int(word) == 0b11 << bit and 23 <= bit <= 29


def test_fault_map_json_round_trip() -> None:
    targets = FaultTargets.from_model(tiny_conv_model(), FaultModel(kind="stuck-at-1", burst=2))
    fault_map = sample_fault_map(targets, 0.01, seed=[4, 0, 2])
    again = FaultMap.from_json(fault_map.to_json())
    assert again.faults == fault_map.faults
    assert (again.kind, again.burst, again.seed, again.ber, again.model) == ("stuck-at-1", 2, [4, 0, 2], 0.01,
                                                                             fault_map.model)
    assert FaultModel.from_dict(again.model) == targets.fault
    with pytest.raises(DataError, match="not a fault map"):
        FaultMap.from_json('{"kind": "flip"}')


def test_bad_maps_are_refused_before_touching_memory() -> None:
    targets = FaultTargets.from_model(tiny_conv_model())
    bad = FaultMap(["w"], np.array([0], np.int32), np.array([18]), np.array([0], np.int16))
    with pytest.raises(DataError, match="indexes element 18 of 'w', which has 18"):
        apply_fault_map(targets.arrays, bad)
    bad = FaultMap(["nope"], np.array([0], np.int32), np.array([0]), np.array([0], np.int16))
    with pytest.raises(DataError, match="tensor 'nope', which is not among the targets"):
        apply_fault_map(targets.arrays, bad)


def test_unsupported_initializer_types_are_refused_when_named() -> None:
    model = tiny_conv_model()
    model.graph.initializer.append(helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1]))
    with pytest.raises(PassError, match="element type INT64 it cannot corrupt"):
        FaultTargets.from_model(model, FaultModel(targets=("shape",)))
