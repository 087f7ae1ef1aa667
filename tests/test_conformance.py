"""The conformance corpus, fast subset: corpus rows run end to end through edge convert, LiteRT, TFLite Micro, Vela.

benchmarks/conformance.py runs the whole corpus (52 rows) and prints the table of the README. The rows here cover a
static and a dynamic batch, opset 13 and 18, a residual network and an autoencoder (no top-1: steps). The GRU/LSTM
rows, unrolled before quantizing, are checked in tests/converters/test_unroll_recurrent.py (a corpus row takes ~50 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks.conformance import Row, float_operators, format_table, run_row  # noqa: E402
from benchmarks.corpus import ARCHITECTURES, build_model, export_onnx  # noqa: E402

HELDOUT = 32
#: The end-to-end rows here use seeded random weights (no training time); the trained path is tested on its own below.
WEIGHTS = "random"


def _assert_conforms(row: Row) -> None:
    assert row.stage == "", f"{row.name} stopped at {row.stage}: {row.reason}"
    assert row.fully_int8, f"float operators: {row.float_ops}"
    for engine, measured in row.engines.items():
        if row.task == "autoencoder":
            assert measured["max_steps"] <= 1, (engine, measured)
        else:
            assert measured["agreement"] >= 0.99, (engine, measured)
    assert set(row.engines) == {"LiteRT ref", "TFLM"}
    assert row.bit_exact, "TFLite Micro's int8 outputs differ from LiteRT's reference kernels"
    assert row.passed


def test_ds_cnn_dynamic_batch_opset_13_exports_fully_int8_and_runs_bit_exact(tmp_path: Path) -> None:
    row = run_row(ARCHITECTURES["ds-cnn"], True, 13, tmp_path, heldout=HELDOUT, weights=WEIGHTS)
    _assert_conforms(row)
    assert row.cpu_operators == 0 and row.npu_operators > 0, row.cpu_operations
    assert (tmp_path / "ds-cnn_dyn_op13_int8.tflite").is_file()


def test_ds_cnn_static_batch_opset_13_exports_fully_int8_and_runs_bit_exact(tmp_path: Path) -> None:
    _assert_conforms(run_row(ARCHITECTURES["ds-cnn"], False, 13, tmp_path, heldout=HELDOUT, vela=False,
                             weights=WEIGHTS))


def test_resnet8_dynamic_batch_opset_18_exports_fully_int8_and_runs_bit_exact(tmp_path: Path) -> None:
    _assert_conforms(run_row(ARCHITECTURES["resnet-8"], True, 18, tmp_path, heldout=HELDOUT, vela=False,
                             weights=WEIGHTS))


def test_fc_autoencoder_static_batch_opset_13_stays_within_one_step(tmp_path: Path) -> None:
    _assert_conforms(run_row(ARCHITECTURES["fc-autoencoder"], False, 13, tmp_path, heldout=HELDOUT, vela=False,
                             weights=WEIGHTS))


def test_corpus_models_are_seeded_and_their_batchnorm_statistics_are_not_the_defaults() -> None:
    import torch

    first, second = build_model(ARCHITECTURES["resnet-8"]), build_model(ARCHITECTURES["resnet-8"])
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    norm = next(m for m in first.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))
    assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))


def test_dynamic_export_has_a_symbolic_batch_and_static_export_batch_one(tmp_path: Path) -> None:
    import onnx

    for dynamic in (False, True):
        path = tmp_path / f"ae_{dynamic}.onnx"
        note = export_onnx(ARCHITECTURES["fc-autoencoder"], path, opset=13, dynamic=dynamic)
        assert note == "torchscript"
        dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
        assert (dim.dim_param == "batch") if dynamic else (dim.dim_value == 1)


def test_float_operators_lists_the_ops_that_touch_float(tmp_path: Path) -> None:
    from converters.tflite import export_tflite
    from edge.artifact import read_artifact

    path = tmp_path / "ds_cnn.onnx"
    export_onnx(ARCHITECTURES["ds-cnn"], path, opset=13, dynamic=True)
    found = float_operators(export_tflite(read_artifact(path)))  # an unquantized model is lowered in float
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(found)


def test_table_counts_passing_rows_and_lists_failures() -> None:
    good = Row("ds-cnn", False, 13, exporter="torchscript", fully_int8=True, bit_exact=True,
               engines={e: {"agreement": 1.0, "max_steps": 0.0, "relative_error": 0.0} for e in ("LiteRT ref", "TFLM")})
    reason = "GRU node 'g' cannot be lowered to TFLite yet; the exporter supports Add, Conv."
    bad = [Row("gru-classifier", dynamic, 13, stage="TFLite export", reason=reason) for dynamic in (False, True)]
    table = format_table([good, *bad])
    assert "**Weights trained: 1/3 rows (33 %) export fully int8" in table
    assert "- gru-classifier_b1_op13, gru-classifier_dyn_op13: TFLite export: GRU node 'g' cannot be lowered to " \
           "TFLite yet\n" in table + "\n"


def test_brief_training_makes_the_float_model_beat_chance_on_held_out_synthetic_data() -> None:
    from benchmarks.conformance import HELDOUT_SEED
    from benchmarks.corpus import class_count, float_task_score

    architecture = ARCHITECTURES["ds-cnn"]
    chance = 1 / class_count(architecture)
    trained = float_task_score(architecture, "trained", 100, HELDOUT_SEED)
    untrained = float_task_score(architecture, "random", 100, HELDOUT_SEED)
    assert trained >= 4 * chance and trained > untrained + 0.3, (trained, untrained, chance)


def test_synthetic_task_is_seeded_and_calibration_differs_from_held_out_data() -> None:
    from benchmarks.corpus import synthetic_task, task_inputs

    architecture = ARCHITECTURES["resnet-8"]
    x, labels = synthetic_task(architecture, 16, 20)
    again, same_labels = synthetic_task(architecture, 16, 20)
    assert np.array_equal(x, again) and np.array_equal(labels, same_labels) and x.dtype == np.float32
    assert not np.array_equal(task_inputs(architecture, 16, 10, "trained"), x)
    assert set(labels.tolist()) <= set(range(10))
    with pytest.raises(ValueError, match="weights must be one of trained, random; got 'pretrained'"):
        task_inputs(architecture, 1, 0, "pretrained")
