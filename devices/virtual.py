"""A virtual board: the MLPerf Tiny monitor plus the ``edge-`` extensions, running TFLite Micro behind a real pty.

The board (:class:`Board`) is the protocol state machine a firmware would hold: an input buffer filled by
``db`` commands, ``infer N W`` timed with a microsecond clock, a model store ("flash") that takes a new
image only after its size, CRC32 and a TFLite Micro load all check out, and a RAM copy of the model where
``edge-flip`` corrupts bits. :func:`serve` puts it on ``os.openpty()`` so that the host talks to it exactly
as to a USB-UART (pyserial on ``/dev/pts/N``), and corrupts the link on request (:class:`Faults`), so that the
host's retries, resyncs and atomic flashing are tested against a misbehaving line rather than a mock.

    python -m devices.virtual --storage DIR [--model FILE] [--faults garbage=0.1,seed=1] [--port-file F]

prints the pty path and serves until SIGINT/SIGTERM (exit 0) or a ``disconnect`` fault (exit 3, like a
board losing power). :func:`spawn` starts one in a subprocess for tests and the ``sim`` target.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from edge.errors import EdgeError, TargetError

log = logging.getLogger("edge")

NAME = "edge-virtual"
FIRMWARE = "0.1.0"
PROFILE = "ULPMark for tinyML Firmware V0.0.1"
STORE_NAME = "model.tflite"
DISCONNECT_STATUS = 3
FAULT_NAMES = ("corrupt-chunk", "corrupt-chunks", "corrupt", "drop", "garbage", "stall", "disconnect", "seed")


class BoardError(Exception):
    """A command the board refuses; its text becomes the ``e-[...]`` line."""


@dataclass
class Faults:
    """Link faults of the virtual board, parsed from ``corrupt-chunk=K,corrupt=P,drop=P,garbage=P,stall=S@B,...``.

    corrupt_chunk: change one hex digit of the K-th ``edge-flash-data`` payload (1-based), once.
    corrupt_chunks: change one hex digit of every ``edge-flash-data`` payload from the K-th on (a persistent fault).
    corrupt / drop: each received byte is corrupted / dropped with this probability.
    garbage: before a reply, with this probability, emit a burst of random bytes and a bogus line.
    stall: (seconds, after byte B): stop answering for that long once B bytes were received.
    disconnect: close the pty and exit with status 3 once this many bytes were received.
    """

    corrupt_chunk: int | None = None
    corrupt_chunks: int | None = None
    corrupt: float = 0.0
    drop: float = 0.0
    garbage: float = 0.0
    stall: tuple[float, int] | None = None
    disconnect: int | None = None
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """Read the comma-separated ``name=value`` list; a bad item is one clear error."""
        faults = cls()
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            name, _, value = item.partition("=")
            name = name.strip().lower()
            if name not in FAULT_NAMES:
                close = difflib.get_close_matches(name, FAULT_NAMES, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise TargetError(f"unknown link fault '{name}'; the virtual board knows "
                                  f"{', '.join(FAULT_NAMES)}.{hint}")
            try:
                if name in ("corrupt", "drop", "garbage"):
                    probability = float(value)
                    if not 0.0 <= probability <= 1.0:
                        raise ValueError
                    setattr(faults, name, probability)
                elif name == "stall":
                    seconds, _, after = value.partition("@")
                    faults.stall = (float(seconds), int(after or 0))
                    if faults.stall[0] < 0 or faults.stall[1] < 0:
                        raise ValueError
                else:
                    number = int(value)
                    if number < (0 if name == "seed" else 1):
                        raise ValueError
                    setattr(faults, name.replace("-", "_"), number)
            except ValueError:
                expected = {"stall": "S@B (seconds, then a byte count)", "seed": "an integer >= 0"}.get(
                    name, "a probability in [0, 1]" if name in ("corrupt", "drop", "garbage") else "an integer >= 1")
                raise TargetError(f"link fault '{item}' needs {expected}.") from None
        return faults


@dataclass
class _Loaded:
    """The active model: its pristine image, the RAM copy faults go to, and the interpreter built from that copy."""

    image: bytes
    ram: bytearray
    session: Any
    input_dtype: np.dtype
    input_shape: tuple[int, ...]

    @property
    def input_bytes(self) -> int:
        return int(np.prod(self.input_shape)) * self.input_dtype.itemsize


class Board:
    """The monitor's state machine: one command in, reply lines out (without the closing ``m-ready``)."""

    def __init__(self, storage: Path | None = None, *, arena_bytes: int | None = None, flash_bytes: int = 1 << 20,
                 input_bytes: int = 1 << 18, max_cmd: int = 1024, plain: bool = False) -> None:
        self.storage = storage
        self.plain = plain  # answer only the MLPerf Tiny commands, as a board without our firmware does
        self.arena_bytes = arena_bytes
        self.flash_bytes = flash_bytes
        self.input_capacity = input_bytes
        self.max_cmd = max_cmd
        self.model: _Loaded | None = None
        self.buffer = bytearray()
        self.expected = 0
        self.results: str | None = None
        self.upload: tuple[int, int, bytearray] | None = None  # announced size, announced crc, bytes so far
        self._boot_ns = time.perf_counter_ns()

    # -- boot and the model store ------------------------------------------------------------------------------

    def boot(self, seed_model: Path | None = None) -> list[str]:
        """Load the stored model (seeding the store from ``seed_model`` when it is empty); the boot banner."""
        stored = self.storage / STORE_NAME if self.storage else None
        image = None
        if stored is not None and stored.is_file():
            image = stored.read_bytes()
        elif seed_model is not None:
            image = Path(seed_model).read_bytes()
            self._store(image)
        if image:
            try:
                self.model = self._build(image)
            except BoardError as exc:
                log.warning("the virtual board boots without a model: %s", exc)
        return ["m-timestamp-mode-performance", "m-init-done"]

    def _build(self, image: bytes, ram: bytearray | None = None) -> _Loaded:
        """An interpreter over ``ram`` (default: a fresh copy of ``image``); BoardError if TFLite Micro refuses it."""
        from edge.tflite_model import TfliteModel
        from runtimes.tflm_session import TFLMSession

        ram = bytearray(image) if ram is None else ram
        try:
            model = TfliteModel.from_bytes(bytes(ram))
            session = TFLMSession(bytes(ram), arena_bytes=self.arena_bytes)
        except EdgeError as exc:
            raise BoardError(f"TFLite Micro cannot load the image: {exc}") from None
        details = model.input_details
        return _Loaded(image, ram, session, np.dtype(details["dtype"]), tuple(int(d) for d in details["shape"]))

    def _store(self, image: bytes) -> None:
        """Write the image to the store atomically: temporary file, fsync, rename, fsync of the folder."""
        if self.storage is None:
            return
        self.storage.mkdir(parents=True, exist_ok=True)
        temporary = self.storage / (STORE_NAME + ".tmp")
        with open(temporary, "wb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self.storage / STORE_NAME)
        folder = os.open(self.storage, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    # -- commands ----------------------------------------------------------------------------------------------

    def handle(self, text: str) -> list[str]:
        """Reply lines for one command (the text between two ``%``)."""
        words = text.split()
        handlers: dict[str, Callable[[list[str]], list[str]]] = {
            "name": self._name, "profile": self._profile, "timestamp": self._timestamp, "db": self._db,
            "infer": self._infer, "results": self._results, "edge-info": self._info,
            "edge-flash-begin": self._flash_begin, "edge-flash-data": self._flash_data,
            "edge-flash-commit": self._flash_commit, "edge-flash-abort": self._flash_abort,
            "edge-flip": self._flip, "edge-restore": self._restore,
        }
        handler = handlers.get(words[0]) if words and not (self.plain and words[0].startswith("edge-")) else None
        if handler is None:
            return [f"e-[Unknown command: {_printable(text.strip())}]"]
        try:
            return handler(words[1:])
        except BoardError as exc:
            return [f"e-[{_printable(str(exc))}]"]
        except (ValueError, IndexError):
            return [f"e-[Bad arguments for {words[0]}: {_printable(' '.join(words[1:]))}]"]

    def _now_us(self) -> int:
        return (time.perf_counter_ns() - self._boot_ns) // 1000

    def _crc(self) -> int:
        return zlib.crc32(self.model.image) if self.model else 0

    def _name(self, args: list[str]) -> list[str]:
        return [f"m-name-dut-[{NAME}]"]

    def _profile(self, args: list[str]) -> list[str]:
        model = f"tflite-{self._crc():08x}" if self.model else "none"
        return [f"m-profile-[{PROFILE}]", f"m-model-[{model}]"]

    def _timestamp(self, args: list[str]) -> list[str]:
        return [f"m-lap-us-{self._now_us()}"]

    def _db(self, args: list[str]) -> list[str]:
        if args[0] == "load":
            size = int(args[1])
            if not 0 < size <= self.input_capacity:
                raise BoardError(f"db load takes 1 to {self.input_capacity} bytes; got {size}")
            self.buffer, self.expected = bytearray(), size
            return [f"m-[Expecting {size} bytes]"]
        if args[0] == "print":
            rows = (self.buffer[i:i + 8] for i in range(0, len(self.buffer), 8))
            return ["m-buffer-" + "-".join(f"{b:02x}" for b in row) for row in rows]
        digits = "".join(args)
        if len(digits) % 2:
            raise BoardError("Insufficent number of hex digits")  # sic: the MLPerf Tiny firmware's spelling
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            raise BoardError(f"not hex digits: {digits[:16]}") from None
        if len(self.buffer) + len(data) > self.expected:
            raise BoardError(f"more bytes than the {self.expected} announced by db load")
        self.buffer += data
        return ["m-load-done"] if len(self.buffer) == self.expected else []

    def _infer(self, args: list[str]) -> list[str]:
        count = int(args[0]) if args else 1
        warmup = int(args[1]) if len(args) > 1 else 10
        if count < 1 or warmup < 0:
            raise BoardError(f"infer takes N >= 1 and W >= 0; got {count} {warmup}")
        model = self.model
        if model is None:
            raise BoardError("no model loaded")
        if len(self.buffer) != model.input_bytes:
            raise BoardError(f"the input buffer holds {len(self.buffer)} bytes; the model takes {model.input_bytes}")
        x = np.frombuffer(bytes(self.buffer), model.input_dtype.newbyteorder("<")).astype(model.input_dtype)
        feeds = {"x": x.reshape(model.input_shape)}
        lines = [f"m-warmup-start-{warmup}"]
        for _ in range(warmup):
            model.session.run(feeds)
        lines += ["m-warmup-done", f"m-infer-start-{count}"]
        start = self._now_us()
        for _ in range(count):
            output = model.session.run(feeds)[0]
        stop = self._now_us()
        self.results = "m-results-[" + ",".join(f"{float(v):.9g}" for v in np.ravel(output)) + "]"
        return lines + [f"m-lap-us-{start}", f"m-lap-us-{stop}", "m-infer-done", self.results]

    def _results(self, args: list[str]) -> list[str]:
        if self.results is None:
            raise BoardError("no results yet")
        return [self.results]

    def _info(self, args: list[str]) -> list[str]:
        from tflite_micro import __version__ as tflm_version

        model = self.model
        values = {
            "fw": FIRMWARE, "engine": f"tflite-micro-{tflm_version}",
            "model-bytes": len(model.image) if model else 0, "model-crc32": f"{self._crc():08x}",
            "arena-bytes": model.session.arena_bytes if model else (self.arena_bytes or 0),
            "flash-bytes": self.flash_bytes, "clock-hz": 0, "max-cmd": self.max_cmd, "input-bytes": self.input_capacity,
        }
        return [f"m-edge-info-{key}-{value}" for key, value in values.items()]

    def _flash_begin(self, args: list[str]) -> list[str]:
        size, crc = int(args[0]), int(args[1], 16)
        if not 0 < size <= self.flash_bytes:
            raise BoardError(f"an image of {size} bytes does not fit the {self.flash_bytes}-byte model store")
        self.upload = (size, crc, bytearray())
        return [f"m-flash-ready-{size}"]

    def _flash_data(self, args: list[str]) -> list[str]:
        if self.upload is None:
            raise BoardError("no upload in progress")
        size, _, received = self.upload
        offset, crc, digits = int(args[0]), int(args[1], 16), args[2]
        if offset != len(received):
            raise BoardError(f"expected offset {len(received)}, got {offset}")
        try:
            chunk = bytes.fromhex(digits)
        except ValueError:
            raise BoardError(f"chunk crc mismatch at {offset}") from None  # a damaged digit is a damaged chunk
        if zlib.crc32(chunk) != crc:
            raise BoardError(f"chunk crc mismatch at {offset}")
        if offset + len(chunk) > size:
            raise BoardError(f"the chunk at {offset} runs past the announced {size} bytes")
        received += chunk
        return [f"m-flash-ack-{len(received)}"]

    def _flash_commit(self, args: list[str]) -> list[str]:
        if self.upload is None:
            raise BoardError("no upload in progress")
        size, crc, received = self.upload
        self.upload = None
        if len(received) != size:
            raise BoardError(f"the image is incomplete: {len(received)} of {size} bytes; the previous model stays")
        if zlib.crc32(received) != crc:
            raise BoardError("the image crc does not match; the previous model stays")
        image = bytes(received)
        loaded = self._build(image)  # before the swap: a model TFLM cannot load never replaces a working one
        self._store(image)
        self.model = loaded
        return [f"m-flash-done-{crc:08x}"]

    def _flash_abort(self, args: list[str]) -> list[str]:
        self.upload = None
        return ["m-flash-aborted"]

    def _flip(self, args: list[str]) -> list[str]:
        model = self.model
        if model is None:
            raise BoardError("no model loaded")
        pairs = [tuple(int(v) for v in item.split(":")) for item in ",".join(args).split(",") if item]
        for offset, bit in pairs:
            if not (0 <= offset < len(model.ram) and 0 <= bit < 8):
                raise BoardError(f"cannot flip bit {bit} of byte {offset}: the model has {len(model.ram)} bytes")
        ram = bytearray(model.ram)
        for offset, bit in pairs:
            ram[offset] ^= 1 << bit
        self.model = self._build(model.image, ram)
        return [f"m-flip-done-{len(pairs)}"]

    def _restore(self, args: list[str]) -> list[str]:
        if self.model is None:
            raise BoardError("no model loaded")
        self.model = self._build(self.model.image)
        return ["m-restore-done"]


def _printable(text: str) -> str:
    """Text safe inside an ``e-[...]`` line: printable ASCII, no brackets' end, at most 80 characters."""
    clean = "".join(c if " " <= c <= "~" and c != "]" else "?" for c in text)
    return clean if len(clean) <= 80 else clean[:77] + "..."


class _Line:
    """Bytes in from the host (through the faults) and reply lines out to it, on the pty's master side."""

    def __init__(self, fd: int, board: Board, faults: Faults, stopping: Callable[[], bool]) -> None:
        self.fd, self.board, self.faults, self.stopping = fd, board, faults, stopping
        self.rng = random.Random(faults.seed)
        self.received = 0
        self.pending = bytearray()
        self.overflow = False
        self.chunks = 0
        self.stalled = False

    def feed(self, data: bytes) -> int | None:
        """Process received bytes; the exit status when a disconnect fault fires, else None."""
        faults = self.faults
        for byte in data:
            self.received += 1
            if not (faults.drop and self.rng.random() < faults.drop):
                if faults.corrupt and self.rng.random() < faults.corrupt:
                    byte ^= self.rng.randrange(1, 256)
                self._take(byte)
            if faults.stall and not self.stalled and self.received >= faults.stall[1]:
                self.stalled = True
                end = time.monotonic() + faults.stall[0]
                while time.monotonic() < end and not self.stopping():
                    time.sleep(0.05)
            if faults.disconnect and self.received >= faults.disconnect:
                return DISCONNECT_STATUS
        return None

    def _take(self, byte: int) -> None:
        if byte != ord("%"):
            if len(self.pending) < self.board.max_cmd:
                self.pending.append(byte)
            else:
                self.overflow = True  # like the MLPerf firmware, keep the start and drop the rest
            return
        text = self.pending.decode("ascii", "replace")
        overflow, self.pending, self.overflow = self.overflow, bytearray(), False
        if overflow:
            self.send([f"e-[Command longer than {self.board.max_cmd} characters]"])
        else:
            self.send(self.board.handle(self._corrupt_chunk(text)))

    def _corrupt_chunk(self, text: str) -> str:
        """The ``corrupt-chunk``/``corrupt-chunks`` faults: change one hex digit of a flash payload."""
        if not text.startswith("edge-flash-data"):
            return text
        self.chunks += 1
        once, every = self.faults.corrupt_chunk, self.faults.corrupt_chunks
        if self.chunks != once and not (every and self.chunks >= every):
            return text
        head, _, digits = text.rpartition(" ")
        if not digits:
            return text
        i = self.rng.randrange(len(digits))
        wrong = "0123456789abcdef".replace(digits[i].lower(), "")[self.rng.randrange(15)]
        return f"{head} {digits[:i]}{wrong}{digits[i + 1:]}"

    def send(self, lines: list[str], ready: bool = True) -> None:
        """Write reply lines (and ``m-ready``), after a burst of garbage when that fault fires."""
        data = "".join(line + "\r\n" for line in lines + (["m-ready"] if ready else [])).encode("ascii")
        if self.faults.garbage and self.rng.random() < self.faults.garbage:
            noise = bytes(b for b in self.rng.randbytes(self.rng.randrange(4, 40)) if b not in b"\r\n")
            data = noise + b"\r\n" + f"x-garbage-{self.rng.randrange(10**6)}\r\n".encode() + data
        self._write(data)

    def _write(self, data: bytes) -> None:
        """Non-blocking write; bytes nobody reads within 2 s are dropped, as a UART does with no listener."""
        view = memoryview(data)
        deadline = time.monotonic() + 2.0
        while view and not self.stopping():
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                select.select([], [self.fd], [], 0.05)


def serve(model: str | None, storage: str | None, faults: str = "", port_file: str | None = None,
          on_ready: Callable[[str], None] | None = None, *, arena_kb: int | None = None, flash_kb: int = 1024,
          plain: bool = False, exit_with_parent: bool = False) -> int:
    """Run a virtual board on a new pty until SIGINT/SIGTERM (returns 0) or a ``disconnect`` fault (returns 3).

    ``model`` seeds the store ``storage`` (a folder; None keeps the model in memory only) when it holds none.
    The pty path goes to ``on_ready`` and, written atomically, to ``port_file``. ``exit_with_parent`` stops
    the board when the process that started it dies, so no orphan outlives a killed host. ``plain`` makes it
    a board with plain MLPerf Tiny firmware (no ``edge-`` commands).
    """
    parsed = Faults.parse(faults)
    if model and not Path(model).is_file():
        raise TargetError(f"the model file '{model}' for the virtual board does not exist.")
    if storage and Path(storage).exists() and not Path(storage).is_dir():
        raise TargetError(f"the model store '{storage}' of the virtual board must be a folder.")
    board = Board(Path(storage) if storage else None, arena_bytes=arena_kb * 1024 if arena_kb else None,
                  flash_bytes=flash_kb * 1024, plain=plain)
    banner = board.boot(Path(model) if model else None)
    stop = threading.Event()
    parent = os.getppid()
    master, slave = os.openpty()
    previous = {}
    try:
        if threading.current_thread() is threading.main_thread():
            previous = {n: signal.signal(n, lambda *_: stop.set()) for n in (signal.SIGINT, signal.SIGTERM)}
        tty.setraw(slave)  # no echo, no line editing: the board sees bytes as the host sent them
        os.set_blocking(master, False)
        path = os.ttyname(slave)
        line = _Line(master, board, parsed, stop.is_set)
        line.send(banner)  # before the host opens the port, as a board prints it at power-on
        if port_file:
            temporary = Path(f"{port_file}.tmp")
            temporary.write_text(path)
            os.replace(temporary, port_file)
        if on_ready:
            on_ready(path)
        while not stop.is_set():
            if exit_with_parent and os.getppid() != parent:
                return 0
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            status = line.feed(data)
            if status is not None:
                return status
        return 0
    finally:
        os.close(master)
        os.close(slave)
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass
class VirtualDevice:
    """A virtual board running in a subprocess: its pty path, its process and its private folder."""

    port: str
    process: subprocess.Popen
    folder: Path

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate the board (SIGTERM, then SIGKILL) and remove its folder; its exit status."""
        return _stop(self.process, self.folder, timeout)

    def log(self) -> str:
        """What the board wrote to stderr so far."""
        with contextlib.suppress(OSError):
            return (self.folder / "device.log").read_text(errors="replace")
        return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(*, storage: str | os.PathLike[str] | None = None, model: str | os.PathLike[str] | None = None,
          faults: str = "", arena_kb: int | None = None, flash_kb: int | None = None, plain: bool = False,
          timeout: float = 30.0) -> VirtualDevice:
    """Start ``python -m devices.virtual`` in a subprocess and wait (at most ``timeout`` s) for its pty path.

    Without ``storage`` the board keeps its model store in its private temporary folder. The process is
    terminated by :meth:`VirtualDevice.stop`, when the handle is garbage-collected, or at interpreter exit.
    """
    folder = Path(tempfile.mkdtemp(prefix="edge-virtual-"))
    port_file = folder / "port"
    command = [sys.executable, "-m", "devices.virtual", "--storage", str(storage or folder / "storage"),
               "--port-file", str(port_file), "--faults", faults, "--exit-with-parent"]
    if model:
        command += ["--model", str(model)]
    if arena_kb:
        command += ["--arena-kb", str(arena_kb)]
    if flash_kb:
        command += ["--flash-kb", str(flash_kb)]
    if plain:
        command += ["--plain"]
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    with open(folder / "device.log", "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env=env, start_new_session=True)  # a Ctrl-C reaches the host, which then stops it
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            status = process.poll()
            text = (folder / "device.log").read_text(errors="replace").strip().splitlines()
            _stop(process, folder, 1.0)
            why = f"exited with status {status}" if status is not None else f"gave no pty within {timeout:g} s"
            raise TargetError(f"the virtual board {why}" + (f": {text[-1]}" if text else "."))
        time.sleep(0.02)
    device = VirtualDevice(port_file.read_text().strip(), process, folder)
    weakref.finalize(device, _stop, process, folder, 5.0)
    return device


def _stop(process: subprocess.Popen, folder: Path, timeout: float) -> int | None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    shutil.rmtree(folder, ignore_errors=True)
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    """Command line of the virtual board; prints the pty path, then serves."""
    parser = argparse.ArgumentParser(prog="python -m devices.virtual", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="TFLite file that seeds an empty model store")
    parser.add_argument("--storage", help="folder of the model store (model.tflite); default: memory only")
    parser.add_argument("--faults", default="", help="link faults, e.g. garbage=0.1,stall=2@500,seed=1")
    parser.add_argument("--port-file", help="write the pty path to this file once the board is up")
    parser.add_argument("--arena-kb", type=int, help="TFLite Micro arena in KiB (default: an upper bound)")
    parser.add_argument("--flash-kb", type=int, default=1024, help="model store capacity in KiB")
    parser.add_argument("--plain", action="store_true", help="plain MLPerf Tiny firmware: no edge- commands")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the starting process dies")
    args = parser.parse_args(argv)
    try:
        return serve(args.model, args.storage, args.faults, args.port_file, lambda path: print(path, flush=True),
                     arena_kb=args.arena_kb, flash_kb=args.flash_kb, plain=args.plain,
                     exit_with_parent=args.exit_with_parent)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
