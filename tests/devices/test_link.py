"""The serial link against the virtual board on a real pty: the MLPerf Tiny session, flashing, and the sim target."""

from __future__ import annotations

import os
import re
import select
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import serial

from devices.base import TargetSpec, tflite_fault_targets
from devices.link import Link, LinkDropped
from devices.serial_target import SerialTarget, SimTarget, _bit_positions
from devices.virtual import Faults, serve, spawn
from edge.errors import TargetError
from edge.faults import FaultModel, apply_fault_map, sample_fault_map
from edge.tflite_model import TfliteModel
from runtimes.tflm_session import TFLMSession

pytestmark = pytest.mark.timeout(120)


def _ask(port: serial.Serial, command: str, timeout: float = 5.0) -> list[str]:
    """Send one command with plain pyserial and return the reply lines before m-ready."""
    port.write(command.encode("ascii") + b"%")
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = port.readline().decode("ascii").strip()
        if line == "m-ready":
            return lines
        if line:
            lines.append(line)
    raise AssertionError(f"no m-ready after '{command}' (got {lines})")


def _banner(path: str) -> list[str]:
    """The boot banner still queued on the pty (read raw: opening with pyserial would flush it)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    data, deadline = b"", time.monotonic() + 5
    try:
        while b"m-ready" not in data and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                data += os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode("ascii").split()


def test_mlperf_tiny_session_matches_tflite_micro_exactly(tmp_path: Path, tiny_tflite, tiny_trials) -> None:
    (tmp_path / "tiny.tflite").write_bytes(tiny_tflite)
    trial = tiny_trials[3]
    expected = TFLMSession(tiny_tflite).run({"x": trial[None]})[0][0]
    with spawn(storage=tmp_path / "store", model=tmp_path / "tiny.tflite") as device:
        assert _banner(device.port) == ["m-timestamp-mode-performance", "m-init-done", "m-ready"]
        with serial.serial_for_url(device.port, baudrate=115200, timeout=5) as port:
            assert _ask(port, "name") == ["m-name-dut-[edge-virtual]"]
            assert _ask(port, "profile") == ["m-profile-[ULPMark for tinyML Firmware V0.0.1]",
                                             f"m-model-[tflite-{zlib.crc32(tiny_tflite):08x}]"]
            assert re.fullmatch(r"m-lap-us-\d+", _ask(port, "timestamp")[0])
            raw = trial.astype("<f4").tobytes()
            assert _ask(port, f"db load {len(raw)}") == [f"m-[Expecting {len(raw)} bytes]"]
            replies = [_ask(port, "db " + raw[i:i + 31].hex()) for i in range(0, len(raw), 31)]
            assert replies[-1] == ["m-load-done"] and all(r == [] for r in replies[:-1])
            assert _ask(port, "db print")[0] == "m-buffer-" + "-".join(f"{b:02x}" for b in raw[:8])
            lines = _ask(port, "infer 5 2")
            assert lines[:3] == ["m-warmup-start-2", "m-warmup-done", "m-infer-start-5"]
            t0, t1 = (int(line.removeprefix("m-lap-us-")) for line in lines[3:5])
            assert t1 >= t0 and lines[5] == "m-infer-done"
            values = lines[6].removeprefix("m-results-[").removesuffix("]").split(",")
            np.testing.assert_array_equal(np.array([float(v) for v in values], np.float32), expected)
            assert _ask(port, "results") == [lines[6]]
            assert _ask(port, "bogus 1") == ["e-[Unknown command: bogus 1]"]
            assert _ask(port, "db load 0")[0].startswith("e-[")
            _ask(port, "db load 2")
            assert _ask(port, "db abc") == ["e-[Insufficent number of hex digits]"]
            assert _ask(port, "infer 1 0") == ["e-[the input buffer holds 0 bytes; the model takes 64]"]


def test_flash_swaps_the_model_and_inference_follows(tmp_path: Path, tiny_tflite, tiny_tflite_int8_io,
                                                     tiny_trials) -> None:
    (tmp_path / "tiny.tflite").write_bytes(tiny_tflite)
    store = tmp_path / "store"
    with spawn(storage=store, model=tmp_path / "tiny.tflite") as device:
        target = SerialTarget(TargetSpec.parse(f"serial:{device.port}?baud=115200&timeout=5"))
        try:
            info = target.link.edge_info()
            assert info["model-crc32"] == f"{zlib.crc32(tiny_tflite):08x}" and int(info["max-cmd"]) == 1024
            report = target.deploy(TfliteModel.from_bytes(tiny_tflite_int8_io))
            assert report["bytes"] == len(tiny_tflite_int8_io) and report["retries"] == 0 and report["chunks"] > 1
            info = target.link.edge_info()
            assert info["model-crc32"] == report["crc32"] == f"{zlib.crc32(tiny_tflite_int8_io):08x}"
            assert int(info["model-bytes"]) == len(tiny_tflite_int8_io)
            assert (store / "model.tflite").read_bytes() == tiny_tflite_int8_io
            expected = TFLMSession(tiny_tflite_int8_io).run({"x": tiny_trials[:8]})[0]
            np.testing.assert_array_equal(target.run(tiny_trials[:8]), expected)  # int8 bytes on the wire
            with pytest.raises(TargetError, match="refused the new model .*TFLite Micro cannot load"):
                target.link.upload(b"\0\0\0\0TFL3" + bytes(100), max_cmd=1024)  # the board checks it too
            assert target.link.edge_info()["model-crc32"] == report["crc32"]
        finally:
            target.close()


def test_sim_target_runs_injects_and_restores_like_tflite_micro(tiny_tflite, tiny_trials) -> None:
    model = TfliteModel.from_bytes(tiny_tflite)
    clean = TFLMSession(tiny_tflite).run({"x": tiny_trials})[0]
    target = SimTarget(TargetSpec.parse("sim?arena=64&timeout=5"))
    try:
        assert SimTarget.check() is None
        report = target.deploy(model)
        assert report["crc32"] == f"{zlib.crc32(tiny_tflite):08x}"
        outputs = target.run(tiny_trials)
        np.testing.assert_array_equal(outputs, clean)
        assert (outputs.argmax(1) == clean.argmax(1)).all()
        seconds = target.latency(tiny_trials[0], runs=20, warmup=2)
        assert len(seconds) >= 5 and (seconds > 0).all()
        assert target.memory(tiny_trials[0])["arena_bytes"] == 64 * 1024
        assert target.info()["engine"].startswith("tflite-micro-")

        for fault in (FaultModel(), FaultModel(burst=3)):
            targets = target.fault_targets(fault)
            fault_map = sample_fault_map(targets, ber=0.0, seed=[5, fault.burst], count=12)
            restore = apply_fault_map(targets.arrays, fault_map)
            expected = TFLMSession(model.with_weights(targets.arrays)).run({"x": tiny_trials})[0]
            restore.undo()
            target.inject(fault_map)
            corrupted = target.run(tiny_trials)
            np.testing.assert_array_equal(corrupted, expected)
            assert not np.array_equal(corrupted, clean)
            target.restore()
            np.testing.assert_array_equal(target.run(tiny_trials[:8]), clean[:8])

        stuck = sample_fault_map(target.fault_targets(FaultModel(kind="stuck-at-1")), ber=0.0, count=2)
        with pytest.raises(TargetError, match="only flip bits"):
            target.inject(stuck)
        process = target.device.process
    finally:
        target.close()
    assert process.poll() is not None


def test_bit_positions_follow_little_endian_words(tiny_tflite) -> None:
    model = TfliteModel.from_bytes(tiny_tflite)
    bias = next(w for w in model.weight_buffers() if w.dtype == "int32")
    targets = tflite_fault_targets(model, FaultModel(burst=4, targets=(bias.name,)))
    fault_map = sample_fault_map(targets, ber=0.0, count=1)
    fault_map.index[:], fault_map.bit[:] = 2, 6  # bits 6..9 of element 2: two in its byte 0, two in its byte 1
    assert _bit_positions(model, fault_map) == [(bias.offset + 8, 6), (bias.offset + 8, 7),
                                                (bias.offset + 9, 0), (bias.offset + 9, 1)]


@pytest.mark.parametrize(("spec", "message"), [
    ("sim?fault=garbage=0.1", "unknown option 'fault'"),
    ("sim?faults=garbag=0.1", "Did you mean 'garbage'"),
    ("sim?faults=stall=2", None),
    ("sim?faults=drop=2", "probability"),
    ("sim?arena=-4", "must be positive"),
    ("sim?flash=0", "must be positive"),
    ("serial:/dev/null?timeout=0", "must be positive"),
])
def test_bad_specs_are_one_clear_error(spec: str, message: str | None) -> None:
    cls = SimTarget if spec.startswith("sim") else SerialTarget
    if message is None:
        cls(TargetSpec.parse(spec)).close()
        return
    with pytest.raises(TargetError, match=re.escape(message)):
        cls(TargetSpec.parse(spec))


def test_fault_list_parses_every_fault() -> None:
    faults = Faults.parse("corrupt-chunk=2,corrupt=0.01,drop=0.02,garbage=0.5,stall=1.5@300,disconnect=900,seed=7")
    assert (faults.corrupt_chunk, faults.corrupt, faults.drop, faults.garbage) == (2, 0.01, 0.02, 0.5)
    assert (faults.stall, faults.disconnect, faults.seed) == ((1.5, 300), 900, 7)


def test_a_port_that_does_not_exist_is_one_clear_error() -> None:
    with pytest.raises(TargetError, match="cannot open the serial port '/dev/edge-no-such-port'"):
        Link("/dev/edge-no-such-port", timeout=1)


def test_serve_announces_its_pty_and_returns_3_when_the_power_goes(tmp_path: Path, tiny_tflite) -> None:
    (tmp_path / "tiny.tflite").write_bytes(tiny_tflite)
    announced: list[str] = []
    status: list[int] = []
    ready = threading.Event()

    def on_ready(path: str) -> None:
        announced.append(path)
        ready.set()

    board = threading.Thread(target=lambda: status.append(serve(
        str(tmp_path / "tiny.tflite"), str(tmp_path / "store"), "disconnect=30", str(tmp_path / "port"), on_ready)))
    board.start()
    assert ready.wait(30)
    assert (tmp_path / "port").read_text() == announced[0]
    with Link(announced[0], timeout=2) as link:  # 8 bytes of resync
        assert link.name() == "edge-virtual"  # 5 more
        assert link.edge_info()["model-crc32"] == f"{zlib.crc32(tiny_tflite):08x}"  # 10 more
        with pytest.raises(LinkDropped):
            link.profile()  # byte 30 of this one cuts the power
    board.join(10)
    assert status == [3] and (tmp_path / "store" / "model.tflite").read_bytes() == tiny_tflite


def test_a_model_larger_than_the_model_store_is_refused(tiny_tflite) -> None:
    with SimTarget(TargetSpec.parse("sim?flash=2")) as target:
        with pytest.raises(TargetError, match=r"refused the new model .*\d{4} bytes does not fit the 2048-byte"):
            target.deploy(TfliteModel.from_bytes(tiny_tflite))
        with pytest.raises(TargetError, match="nothing deployed"):
            target.run(np.zeros((1, 2, 1, 8), np.float32))


def test_a_plain_mlperf_board_is_evaluated_but_not_flashed(tmp_path: Path, tiny_tflite, tiny_trials, caplog) -> None:
    (tmp_path / "tiny.tflite").write_bytes(tiny_tflite)
    with spawn(storage=tmp_path / "store", model=tmp_path / "tiny.tflite", plain=True) as device, \
            SerialTarget(TargetSpec.parse(f"serial:{device.port}")) as target:
        report = target.deploy(TfliteModel.from_bytes(tiny_tflite))
        assert report["flashed"] is False and "plain MLPerf Tiny" in report["note"]
        assert "cannot be flashed" in caplog.text
        expected = TFLMSession(tiny_tflite).run({"x": tiny_trials[:4]})[0]
        np.testing.assert_array_equal(target.run(tiny_trials[:4]), expected)  # 31-byte db chunks here
        assert (target.latency(tiny_trials[0], runs=5, warmup=1) > 0).all()
        with pytest.raises(TargetError, match="plain MLPerf Tiny firmware .*cannot report its memory"):
            target.memory(tiny_trials[0])
