"""Singer output: the SDK's msgspec encoding, written in chunks instead of line by line.

With ``PYTHONUNBUFFERED`` (common under orchestrators) every message the SDK writes is its own
system call and flush. Here messages queue in memory and go out in order, in chunks of about a
megabyte, and with a STATE message at most a second after the last write, so a target sees
each STATE soon after the records it covers. History records skip the SDK's message objects
altogether (``write_records``).
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import time
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import SingerMessageType

CHUNK_BYTES = 1 << 20
# A STATE is written at most this long after it was produced. Each write hands the GIL to the
# history readers and costs up to a switch interval to get back, so not one write per run.
STATE_DELAY_SECONDS = 1.0


class SingerOutput(MsgSpecWriter):
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = msgspec.json.Encoder()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_by = 0.0
        # Also on the way out of a SIGTERM, after which the SDK writes a last STATE.
        atexit.register(self._flush_at_exit)

    def _queue(self, line: bytes) -> None:
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= CHUNK_BYTES:
            self.flush()

    def write_records(
        self, stream: str, records: list[dict[str, t.Any]], time_extracted: str
    ) -> None:
        """Queue RECORDs whose values are already JSON-ready and finite, encoded together."""
        if not records:
            return
        head = b'{"type":"RECORD","stream":' + self._encoder.encode(stream) + b',"record":'
        tail = b',"time_extracted":' + self._encoder.encode(time_extracted) + b"}\n"
        # One record per line; msgspec escapes newlines in strings, so each b"\n" ends one.
        lines = self._encoder.encode_lines(records)
        self._queue(head + lines[:-1].replace(b"\n", tail + head) + tail)

    def write_message(self, message: t.Any) -> None:
        self._queue(bytes(self.format_message(message)))
        if message.type == SingerMessageType.STATE and time.monotonic() >= self._flush_by:
            self.flush()

    def _flush_at_exit(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # stdout may be gone by then
            self.flush()

    def flush(self) -> None:
        if self._pending:
            sys.stdout.buffer.write(b"".join(self._pending))
            sys.stdout.flush()
            self._pending.clear()
            self._pending_bytes = 0
        self._flush_by = time.monotonic() + STATE_DELAY_SECONDS
