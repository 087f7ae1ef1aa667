"""The host against a misbehaving line: corrupted chunks, a board that loses power mid-upload, noise and stalls."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from devices.base import TargetSpec
from devices.serial_target import SerialTarget
from devices.virtual import DISCONNECT_STATUS, spawn
from edge.errors import TargetError
from edge.tflite_model import TfliteModel
from runtimes.tflm_session import TFLMSession

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def seeded(tmp_path: Path, tiny_tflite) -> tuple[Path, Path]:
    """A model file to seed a board's store with, and the store folder."""
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_tflite)
    return path, tmp_path / "store"


def _target(port: str, timeout: float = 5.0) -> SerialTarget:
    return SerialTarget(TargetSpec.parse(f"serial:{port}?timeout={timeout}&retries=3"))


def _assert_holds(target: SerialTarget, data: bytes, trials: np.ndarray) -> None:
    """The board reports ``data`` as its model and computes exactly what TFLite Micro computes with it."""
    assert target.link.edge_info()["model-crc32"] == f"{zlib.crc32(data):08x}"
    assert target.deploy(TfliteModel.from_bytes(data))["flashed"] is False  # nothing to flash: it holds that model
    np.testing.assert_array_equal(target.run(trials), TFLMSession(data).run({"x": trials})[0])


def test_a_corrupted_chunk_is_resent(seeded, tiny_tflite_int8_io, tiny_trials) -> None:
    model, store = seeded
    with spawn(storage=store, model=model, faults="corrupt-chunk=2,seed=1") as device, _target(device.port) as target:
        report = target.deploy(TfliteModel.from_bytes(tiny_tflite_int8_io))
        assert report["retries"] >= 1 and report["crc32"] == f"{zlib.crc32(tiny_tflite_int8_io):08x}"
        _assert_holds(target, tiny_tflite_int8_io, tiny_trials[:8])


def test_persistent_corruption_aborts_and_the_previous_model_stays(seeded, tiny_tflite, tiny_tflite_int8_io,
                                                                  tiny_trials) -> None:
    model, store = seeded
    with spawn(storage=store, model=model, faults="corrupt-chunks=3,seed=1") as device, _target(device.port) as target:
        with pytest.raises(TargetError, match=r"chunk at byte \d+ of \d+ failed 4 time\(s\) \(chunk crc mismatch"):
            target.deploy(TfliteModel.from_bytes(tiny_tflite_int8_io))
        _assert_holds(target, tiny_tflite, tiny_trials[:8])
    assert (store / "model.tflite").read_bytes() == tiny_tflite


def test_power_loss_mid_upload_keeps_the_previous_model(seeded, tiny_tflite, tiny_tflite_int8_io, tiny_trials) -> None:
    model, store = seeded
    with spawn(storage=store, model=model, faults="disconnect=2500") as device, _target(device.port) as target:
        with pytest.raises(TargetError, match=r"link dropped during the upload at byte \d+ of \d+; the board keeps"):
            target.deploy(TfliteModel.from_bytes(tiny_tflite_int8_io))
        assert device.process.wait(10) == DISCONNECT_STATUS
    with spawn(storage=store) as device, _target(device.port) as target:  # power back on, same store
        _assert_holds(target, tiny_tflite, tiny_trials[:8])


def test_a_session_on_a_noisy_line_gives_exact_results(seeded, tiny_tflite_int8_io, tiny_trials) -> None:
    model, store = seeded
    with spawn(storage=store, model=model, faults="garbage=0.3,seed=3") as device, _target(device.port) as target:
        target.deploy(TfliteModel.from_bytes(tiny_tflite_int8_io))
        np.testing.assert_array_equal(target.run(tiny_trials[:16]),
                                      TFLMSession(tiny_tflite_int8_io).run({"x": tiny_trials[:16]})[0])
        assert target.info()["name"] == "edge-virtual"


def test_a_short_stall_is_recovered_and_a_long_one_reported(seeded, tiny_tflite, tiny_trials) -> None:
    model, store = seeded
    expected = TFLMSession(tiny_tflite).run({"x": tiny_trials[:4]})[0]
    with spawn(storage=store, model=model, faults="stall=1.2@150") as device, _target(device.port, 0.5) as target:
        target.deploy(TfliteModel.from_bytes(tiny_tflite))
        start = time.monotonic()
        np.testing.assert_array_equal(target.run(tiny_trials[:4]), expected)  # timed out, resynced, reloaded
        assert time.monotonic() - start > 1.0  # the stall did happen, within the first input load
    with spawn(storage=store, model=model, faults="stall=30@150") as device, _target(device.port, 0.3) as target:
        target.deploy(TfliteModel.from_bytes(tiny_tflite))
        start = time.monotonic()
        with pytest.raises(TargetError, match="does not answer"):
            target.run(tiny_trials[:4])
        assert time.monotonic() - start < 10
