"""Singer output: the SDK's msgspec writer plus a buffered lane for history records.

With ``PYTHONUNBUFFERED`` (common under orchestrators) every message the SDK writes is its own
system call. History records are most of a sync's volume, so they are encoded directly and
written in large chunks; any other message flushes them first, so the order stays exact.
"""

from __future__ import annotations

import sys
import typing as t

import msgspec
from singer_sdk.contrib.msgspec import MsgSpecWriter

CHUNK_BYTES = 1 << 20


class SingerOutput(MsgSpecWriter):
    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = msgspec.json.Encoder()
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write_record(self, stream: str, record: dict[str, t.Any], time_extracted: str) -> None:
        """Queue a RECORD whose values are already JSON-ready and finite."""
        line = self._encoder.encode(
            {"type": "RECORD", "stream": stream, "record": record, "time_extracted": time_extracted}
        )
        self._pending.append(line + b"\n")
        self._pending_bytes += len(line) + 1
        if self._pending_bytes >= CHUNK_BYTES:
            self.flush_records()

    def flush_records(self) -> None:
        if self._pending:
            sys.stdout.buffer.write(b"".join(self._pending))
            sys.stdout.flush()
            self._pending.clear()
            self._pending_bytes = 0

    def write_message(self, message: t.Any) -> None:
        self.flush_records()
        super().write_message(message)
