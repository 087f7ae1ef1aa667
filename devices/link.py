"""Host side of the MLPerf Tiny serial monitor, plus the toolkit's ``edge-`` extensions (flash, bit flips).

Wire format (devices.md §1.1): ASCII commands terminated by ``%``; replies are ``\\r\\n`` lines, ``m-``
messages and ``e-[...]`` errors, and every reply ends with ``m-ready``. The port is opened with pyserial's
``serial_for_url``, so ``/dev/ttyACM0``, ``/dev/pts/N``, ``socket://host:port`` and ``loop://`` all work.

A serial line is not reliable, so:

- every read has a deadline (a short pyserial timeout polled up to a per-command deadline);
- lines that are neither ``m-`` nor ``e-`` are noise and skipped;
- :meth:`Link.resync` re-frames the line: it discards input, sends ``%`` (ending any half-received
  command) and a unique unknown command ``sync-K%``, and reads until the board has echoed that very command
  and said ``m-ready``; replies that arrive late from a stalled board are thereby consumed, never mistaken
  for the answer to the next command;
- on a timeout the host resyncs (always) and resends the command once if it is idempotent; so it does when
  the board calls an idempotent command unknown but echoes something else (the line garbled it);
- an input load (``db``) that fails is redone from ``db load``; a flash chunk that fails is resent at half
  the size, and the board resumes from the offset it reports;
- the port vanishing (pyserial ``SerialException``/``OSError``, EOF) is :class:`LinkDropped`.

Errors form a small tree under the toolkit's ``TargetError``::

    TargetError
    ├── DeviceRefused   the board answered e-[...]
    ├── LinkTimeout     no complete reply in time, even after a resync
    └── LinkDropped     the port went away
"""

from __future__ import annotations

import contextlib
import re
import time
import zlib
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from edge.errors import TargetError

READY = "m-ready"
#: bytes per ``db`` command on a plain MLPerf board: 62 hex digits plus "db " fit its 80-character buffer
DB_CHUNK = 31
EDGE_INFO_KEYS = ("model-bytes", "model-crc32", "arena-bytes", "flash-bytes", "input-bytes", "clock-hz", "max-cmd",
                  "engine", "fw")
_POLL_S = 0.05  # pyserial read timeout; the per-command deadline is checked between reads
_RESYNC_TRIES = 3


class DeviceRefused(TargetError):
    """The board answered a command with an ``e-[...]`` line (``reason`` is the text in the brackets)."""

    def __init__(self, url: str, command: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the board on '{url}' refused '{_short(command)}': {reason}.")


class LinkTimeout(TargetError):
    """No complete reply within the deadline. ``recoverable``: the line was resynced and the board answers again."""

    def __init__(self, message: str, *, recoverable: bool = False) -> None:
        self.recoverable = recoverable
        super().__init__(message)


class LinkDropped(TargetError):
    """The port went away: cable pulled, board powered off, emulator process gone."""


@dataclass
class Inference:
    """What ``infer N W`` reported: the two device timestamps (µs) around N inferences, and the results."""

    count: int
    t0_us: int
    t1_us: int
    results: np.ndarray

    @property
    def seconds_per_inference(self) -> float:
        return (self.t1_us - self.t0_us) / 1e6 / self.count


class Link:
    """One open serial port to a board speaking the monitor protocol; resynced on open (the boot banner may be gone).

    >>> with Link("/dev/ttyACM0") as link:
    ...     link.name(), link.edge_info()
    """

    def __init__(self, url: str, *, baud: int = 115200, timeout: float = 5.0, retries: int = 3) -> None:
        import serial

        self.url, self.timeout, self.retries = url, timeout, retries
        self._buffer = bytearray()
        self._nonce = 0
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=_POLL_S, write_timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TargetError(f"cannot open the serial port '{url}' ({exc}).") from None
        try:
            self.resync()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the port (safe to call twice)."""
        self._port.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- framing -----------------------------------------------------------------------------------------------

    def command(self, text: str, *, timeout: float | None = None, idempotent: bool = True) -> list[str]:
        """Send ``text%``; the ``m-`` lines of the reply (``m-ready`` excluded). An ``e-`` line raises DeviceRefused."""
        timeout = timeout or self.timeout
        for attempt in range(2):
            self._discard()
            self._write(text.encode("ascii") + b"%")
            try:
                lines = self._reply(timeout)
            except LinkTimeout:
                self.resync()
                if not idempotent or attempt:
                    raise LinkTimeout(f"the board on '{self.url}' did not answer '{_short(text)}' within {timeout:g} s "
                                      "(the line was resynced).", recoverable=True) from None
                continue
            errors = [line for line in lines if line.startswith("e-")]
            if not errors:
                return lines
            line = errors[0]
            reason = line[3:-1] if line.startswith("e-[") and line.endswith("]") else line[2:]
            if not (idempotent and attempt == 0 and _garbled(text, reason)):
                raise DeviceRefused(self.url, text, reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def resync(self) -> None:
        """Re-frame the line: end any partial command, then wait for the board to echo a unique command and be ready."""
        for _ in range(_RESYNC_TRIES):
            self._nonce += 1
            token = f"sync-{self._nonce}]"
            self._discard()
            self._write(f"%sync-{self._nonce}%".encode("ascii"))
            deadline = time.monotonic() + self.timeout
            echoed = False
            while (line := self._line(deadline)) is not None:
                if line.endswith(token):
                    echoed = True
                elif echoed and line == READY:
                    return
        raise LinkTimeout(f"the board on '{self.url}' does not answer (no reply to {_RESYNC_TRIES} resyncs of "
                          f"{self.timeout:g} s each); is it powered and running the monitor firmware?")

    def _reply(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        lines = []
        while (line := self._line(deadline)) is not None:
            if line == READY:
                return lines
            if line.startswith(("m-", "e-")):
                lines.append(line)
        raise LinkTimeout(f"no reply from '{self.url}' within {timeout:g} s.")

    def _line(self, deadline: float) -> str | None:
        """The next line (without its line ending), or None at the deadline."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = self._buffer[:end].decode("ascii", "replace").strip()
                del self._buffer[: end + 1]
                return line
            if time.monotonic() > deadline:
                return None
            self._buffer += self._read()

    def _read(self) -> bytes:
        import serial

        try:
            return self._port.read(max(1, self._port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise LinkDropped(f"the link to '{self.url}' dropped ({exc}).") from None

    def _write(self, data: bytes) -> None:
        import serial

        try:
            self._port.write(data)
        except serial.SerialTimeoutException:
            raise LinkTimeout(f"the board on '{self.url}' takes no input (write timed out after {self.timeout:g} s).") \
                from None
        except (serial.SerialException, OSError) as exc:
            raise LinkDropped(f"the link to '{self.url}' dropped ({exc}).") from None

    def _discard(self) -> None:
        import serial

        self._buffer.clear()
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise LinkDropped(f"the link to '{self.url}' dropped ({exc}).") from None

    # -- the MLPerf Tiny commands ------------------------------------------------------------------------------

    def name(self) -> str:
        """The board's name (``m-name-dut-[NAME]``)."""
        return _bracket(self.command("name"), "m-name-dut-") or "unknown"

    def profile(self) -> dict[str, str]:
        """The firmware profile and the model it reports (``m-profile-[...]``, ``m-model-[...]``)."""
        lines = self.command("profile")
        return {"profile": _bracket(lines, "m-profile-") or "unknown",
                "model": _bracket(lines, "m-model-") or "unknown"}

    def load(self, data: bytes, chunk: int = DB_CHUNK) -> None:
        """Fill the board's input buffer (``db load N`` then ``db HEX`` chunks); the whole load is retried on errors."""
        why = ""
        for _ in range(self.retries + 1):
            try:
                self.command(f"db load {len(data)}")
                lines: list[str] = []
                for start in range(0, len(data), chunk):
                    lines = self.command("db " + data[start:start + chunk].hex(), idempotent=False)
                if "m-load-done" in lines:
                    return
                why = "the board did not confirm the end of the input"
            except (DeviceRefused, LinkTimeout) as exc:
                if isinstance(exc, LinkTimeout) and not exc.recoverable:
                    raise
                why = str(exc)
        raise TargetError(f"loading {len(data)} input bytes failed {self.retries + 1} times; the last time {why}")

    def infer(self, count: int = 1, warmup: int = 0, timeout: float | None = None) -> Inference:
        """Run ``infer N W`` on the loaded input; the two timestamps and the results."""
        lines = self.command(f"infer {count} {warmup}", timeout=timeout)
        laps = [int(line[len("m-lap-us-"):]) for line in lines if line.startswith("m-lap-us-")]
        results = _bracket(lines, "m-results-")
        if len(laps) != 2 or results is None:
            raise TargetError(f"the board on '{self.url}' gave no timestamps or results for 'infer {count} {warmup}'.")
        try:
            values = np.array([float(v) for v in results.split(",") if v.strip()], dtype=np.float32)
        except ValueError:
            raise TargetError(f"the board on '{self.url}' sent results that are not numbers: {results[:60]}") from None
        return Inference(count, laps[0], laps[1], values)

    # -- the edge- extensions ----------------------------------------------------------------------------------

    def edge_info(self) -> dict[str, str] | None:
        """The ``m-edge-info-KEY-VALUE`` lines as a dict, or None on a plain MLPerf board (unknown command)."""
        try:
            lines = self.command("edge-info")
        except DeviceRefused as exc:
            if exc.reason.startswith("Unknown command"):
                return None
            raise
        info = {}
        for line in lines:
            if not line.startswith("m-edge-info-"):
                continue
            rest = line[len("m-edge-info-"):]
            key = next((k for k in EDGE_INFO_KEYS if rest.startswith(k + "-")), rest.partition("-")[0])
            info[key] = rest[len(key) + 1:]
        return info

    def upload(self, image: bytes, max_cmd: int) -> dict[str, Any]:
        """Flash ``image`` in CRC-checked chunks sized to ``max_cmd``; the board swaps it in once it all checks out.

        A chunk the board refuses (bad CRC, wrong offset) or does not acknowledge in time is resent at half the
        size (a noisy line passes short commands more often), at most ``retries`` times; then the upload is
        aborted. Returns bytes, chunks (acknowledged), retries (resends), seconds and crc32 (hex).
        """
        size, crc, start = len(image), zlib.crc32(image), time.perf_counter()
        prefix = len(f"edge-flash-data {size} {crc:08x} ")
        step = max(1, (max_cmd - prefix) // 2)
        offset = retries = chunks = 0
        try:
            self._expect(self.command(f"edge-flash-begin {size} {crc:08x}"), f"m-flash-ready-{size}")
            while offset < size:
                offset, retried = self._send_chunk(image, offset, step)
                retries, chunks = retries + retried, chunks + 1
            try:
                lines = self.command("edge-flash-commit", timeout=max(self.timeout, 30.0), idempotent=False)
                self._expect(lines, f"m-flash-done-{crc:08x}")
            except LinkTimeout:
                info = self.edge_info() or {}
                if info.get("model-crc32") != f"{crc:08x}":
                    raise
        except LinkDropped:
            raise LinkDropped(f"the link dropped during the upload at byte {offset} of {size}; the board keeps its "
                              "previous model.") from None
        except DeviceRefused as exc:
            raise TargetError(f"the board refused the new model ({exc.reason}); it keeps its previous model.") from None
        return {"bytes": size, "chunks": chunks, "retries": retries,
                "seconds": time.perf_counter() - start, "crc32": f"{crc:08x}"}

    def _send_chunk(self, image: bytes, offset: int, step: int) -> tuple[int, int]:
        """Send the chunk at ``offset`` until acknowledged; the next offset and how many resends it took."""
        why = ""
        for attempt in range(self.retries + 1):
            chunk = image[offset:offset + min(step, max(16, step >> attempt))]
            try:
                text = f"edge-flash-data {offset} {zlib.crc32(chunk):08x} {chunk.hex()}"
                lines = self.command(text, idempotent=False)
                self._expect(lines, f"m-flash-ack-{offset + len(chunk)}")
                return offset + len(chunk), attempt
            except DeviceRefused as exc:
                why = exc.reason
                moved = re.fullmatch(r"expected offset (\d+), got \d+", exc.reason)
                if moved and 0 <= int(moved.group(1)) <= len(image):
                    return int(moved.group(1)), attempt + 1  # an earlier send landed but its ack was lost
                if exc.reason == "no upload in progress":
                    break  # the board restarted or dropped the upload: resending cannot help
            except LinkTimeout as exc:
                if not exc.recoverable:
                    raise
                why = str(exc)
        with contextlib.suppress(TargetError):
            self.command("edge-flash-abort")
        raise TargetError(f"the chunk at byte {offset} of {len(image)} failed {attempt + 1} time(s) ({why}); the "
                          "upload was aborted and the board keeps its previous model.")

    def flip(self, pairs: list[tuple[int, int]], max_cmd: int) -> int:
        """Flip (byte offset, bit) pairs of the active model's RAM copy, packing as many per command as fit."""
        commands: list[str] = []
        for offset, bit in pairs:
            item = f"{offset}:{bit}"
            if commands and len(commands[-1]) + 1 + len(item) <= max_cmd:
                commands[-1] += "," + item
            else:
                commands.append("edge-flip " + item)
        done = 0
        for command in commands:
            done += int(self._expect(self.command(command, idempotent=False), "m-flip-done-"))
        return done

    def restore(self) -> None:
        """Put the stored (pristine) model back into RAM."""
        self._expect(self.command("edge-restore"), "m-restore-done")

    def _expect(self, lines: list[str], prefix: str) -> str:
        """The rest of the first line starting with ``prefix``; a reply without one is a protocol error."""
        for line in lines:
            if line.startswith(prefix):
                return line[len(prefix):]
        raise TargetError(f"the board on '{self.url}' answered {lines or 'nothing'} where '{prefix}...' was expected.")


def _bracket(lines: list[str], prefix: str) -> str | None:
    """The text inside ``[...]`` of the first line starting with ``prefix``."""
    for line in lines:
        if line.startswith(prefix + "[") and line.endswith("]"):
            return line[len(prefix) + 1:-1]
    return None


def _garbled(sent: str, reason: str) -> bool:
    """Whether the board echoes as unknown a command other than the one sent: the line damaged it, so resend."""
    echoed = reason.removeprefix("Unknown command: ")
    return echoed != reason and not sent.startswith(echoed.removesuffix("..."))


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
