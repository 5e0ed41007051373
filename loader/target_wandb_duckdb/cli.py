"""Singer side: read messages from stdin, write each stream's records to NDJSON batch files
(never decoding them), load each batch in the background, emit STATE once what precedes it is
committed."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import msgspec

from target_wandb_duckdb import __version__
from target_wandb_duckdb.warehouse import SEQUENCE, Batch, LoadError, Table, Warehouse

SETTINGS = {
    "path": {"type": "string", "description": "DuckDB database file (created if missing)."},
    "default_target_schema": {"type": "string", "default": "main",
                              "description": "Schema the tables are created in."},
    "batch_size_rows": {"type": "integer", "default": 100_000,
                        "description": "Records read before a batch is loaded (all streams)."},
    "hard_delete": {"type": "boolean", "default": False,
                    "description": "Delete the rows of records carrying _sdc_deleted_at "
                                   "instead of keeping them flagged."},
}  # fmt: skip


PREFIX = b'{"' + SEQUENCE.encode() + b'":'
EXTRACTED = b'"_sdc_extracted_at":'
# A bare NaN or Infinity token where a JSON value belongs (not inside a string).
NOT_JSON = re.compile(rb"[:,\[]\s*-?(NaN|Infinity)\b")


class Message(msgspec.Struct):
    """A Singer message; record, schema and state value stay undecoded JSON."""

    type: str
    stream: str = ""
    record: msgspec.Raw = msgspec.Raw(b"")
    time_extracted: msgspec.Raw = msgspec.Raw(b"null")
    schema: msgspec.Raw = msgspec.Raw(b"")
    key_properties: list[str] = []
    value: msgspec.Raw = msgspec.Raw(b"")


class InputError(Exception):
    """Input this loader cannot take; the message names the line."""


class Loader:
    def __init__(self, warehouse: Warehouse, batch_size: int, out: BinaryIO) -> None:
        self.warehouse = warehouse
        self.batch_size = batch_size
        self.out = out
        self.work = Path(tempfile.mkdtemp(prefix="target-wandb-duckdb-"))
        self.tables: dict[str, Table] = {}
        self.schemas: dict[str, bytes] = {}  # stream -> its last SCHEMA message's schema + keys
        self.new_tables: list[Table] = []  # tables of SCHEMA messages not yet handed to a load
        self.open: dict[str, tuple[Batch, BinaryIO]] = {}
        self.rows = 0  # records in the open batches
        self.cuts = 0
        self.state: bytes | None = None  # the latest STATE not yet handed to a load
        self.pending: Future | None = None  # the load in flight (one at a time)
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")

    def run(self, lines: BinaryIO) -> None:
        decode = msgspec.json.Decoder(Message).decode
        number = 0
        for number, line in enumerate(lines, 1):
            try:
                message = decode(line)
            except msgspec.DecodeError as error:
                if not line.strip():
                    continue
                hint = " (NaN and Infinity are not JSON)" if NOT_JSON.search(line) else ""
                raise InputError(
                    f"input line {number}: not a Singer message: {error}{hint}"
                ) from None
            kind = message.type
            if kind == "RECORD":
                self._record(message, number)
            elif kind == "SCHEMA":
                self._schema(message, number)
            elif kind == "STATE":
                self.state = bytes(message.value)
            elif kind == "ACTIVATE_VERSION":
                pass  # full-table replication versions: the keyed upsert already replaces rows
            else:
                raise InputError(f"input line {number}: message type {kind!r} is not supported "
                                 "(RECORD, SCHEMA, STATE and ACTIVATE_VERSION are)")  # fmt: skip
        self._cut()
        self._wait()
        log(f"done: {number} input lines")

    def _record(self, message: Message, number: int) -> None:
        """Append the record's JSON to its stream's batch file, with the input line number
        (which orders duplicates) and time_extracted spliced in front of its keys."""
        batch, sink = self.open.get(message.stream) or self._start(message.stream, number)
        raw = memoryview(message.record)
        if raw[:1] != b"{":
            raise InputError(
                f"input line {number}: stream {message.stream}: the record is not a JSON object"
            )
        rest = raw[1:]
        comma = b","
        if rest[:1] == b"}" or (rest[:1].tobytes().isspace() and bytes(rest).strip() == b"}"):
            comma = b""  # an empty record
        text = b"%s%d,%s%s%s%s\n" % (PREFIX, number, EXTRACTED, message.time_extracted, comma, rest)
        sink.write(text)
        batch.rows += 1
        if len(text) > batch.longest:
            batch.longest = len(text)
        self.rows += 1
        if self.rows >= self.batch_size:
            self._cut()

    def _schema(self, message: Message, number: int) -> None:
        stream = message.stream
        if not stream:
            raise InputError(f"input line {number}: SCHEMA without a stream")
        described = bytes(message.schema) + json.dumps(message.key_properties).encode()
        if self.schemas.get(stream) == described:
            return
        try:
            table = Table.from_schema(
                stream, json.loads(bytes(message.schema)), message.key_properties
            )
        except (ValueError, AttributeError) as error:
            raise InputError(
                f"input line {number}: stream {stream}: invalid schema: {error}"
            ) from None
        except LoadError as error:
            raise InputError(f"input line {number}: {error}") from None
        old = self.tables.get(stream)
        if old and old.keys != table.keys:
            raise InputError(f"input line {number}: stream {stream}: key_properties changed from "
                             f"{old.keys} to {table.keys}; load it into a new schema or drop "
                             "the table first")  # fmt: skip
        if stream in self.open:  # rows read under the previous schema load with it
            self._cut()
        self.tables[stream] = table
        self.new_tables.append(table)
        self.schemas[stream] = described

    def _start(self, stream: str, number: int) -> tuple[Batch, BinaryIO]:
        table = self.tables.get(stream)
        if table is None:
            raise InputError(f"input line {number}: RECORD of stream {stream!r} before its SCHEMA")
        directory = self.work / f"batch-{self.cuts + 1:05d}"
        directory.mkdir(exist_ok=True)
        batch = Batch(table, directory / f"{table.name}.jsonl")
        entry = (batch, open(batch.path, "wb", buffering=1 << 20))  # noqa: SIM115
        self.open[stream] = entry
        return entry

    def _cut(self) -> None:
        """Hand the open batches (and the STATE read after them) to a background load."""
        batches = []
        for batch, sink in self.open.values():
            sink.close()
            batches.append(batch)
        self.open.clear()
        self.rows = 0
        self.cuts += 1
        state, self.state = self.state, None
        tables, self.new_tables = self.new_tables, []
        if not batches and not tables and state is None:
            return
        self._wait()
        self.pending = self.background.submit(self._load, tables, batches, state, self.cuts)

    def _load(
        self, tables: list[Table], batches: list[Batch], state: bytes | None, cut: int
    ) -> None:
        started = time.perf_counter()
        if tables or batches:
            landed = self.warehouse.load(tables, batches)
        if batches:
            read = sum(b.rows for b in batches)
            summary = ", ".join(f"{name} {rows}" for name, rows in landed.items())
            log(f"batch {cut}: {read} records committed in {time.perf_counter() - started:.1f} s "
                f"(rows written: {summary})")  # fmt: skip
            shutil.rmtree(batches[0].path.parent, ignore_errors=True)
        if state is not None:
            self.out.write(state + b"\n")
            self.out.flush()

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self, failed: bool) -> None:
        """Wait for the load in flight; keep the batch files if anything failed."""
        for _, sink in self.open.values():
            sink.close()
        try:
            self._wait()
        finally:
            self.background.shutdown()
            if failed and any(self.work.iterdir()):
                log(f"the records not committed are kept in {self.work} (one JSON object per line)")
            else:
                shutil.rmtree(self.work, ignore_errors=True)


def log(text: str) -> None:
    print(f"target-wandb-duckdb: {text}", file=sys.stderr, flush=True)


def read_config(path: str | None) -> dict:
    config = json.loads(Path(path).read_text()) if path else {}
    unknown = set(config) - set(SETTINGS)
    if unknown:
        log(f"ignoring unknown settings: {sorted(unknown)}")
    if not config.get("path"):
        raise InputError("the setting `path` (the DuckDB database file) is required")
    if (
        not isinstance(config.get("batch_size_rows", 1), int)
        or config.get("batch_size_rows", 1) < 1
    ):
        raise InputError("the setting `batch_size_rows` must be a positive integer")
    return {name: config.get(name, spec.get("default")) for name, spec in SETTINGS.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="target-wandb-duckdb", description=__doc__)
    parser.add_argument("--config", help="JSON file with the settings (see --about)")
    parser.add_argument("--about", action="store_true", help="print the settings as JSON")
    parser.add_argument("--format", default="json", help="--about's format (json only)")
    args = parser.parse_args(argv)
    if args.about:
        settings = {"type": "object", "properties": SETTINGS, "required": ["path"]}
        about = {"name": "target-wandb-duckdb", "version": __version__,
                 "description": "Singer loader into DuckDB (batches upserted by key)",
                 "capabilities": ["about", "hard-delete"], "settings": settings}  # fmt: skip
        print(json.dumps(about, indent=2))
        return
    loader = None
    try:
        config = read_config(args.config)
        warehouse = Warehouse.open(config["path"], config["default_target_schema"],
                                   config["hard_delete"])  # fmt: skip
        loader = Loader(warehouse, config["batch_size_rows"], sys.stdout.buffer)
        loader.run(sys.stdin.buffer)
    except (InputError, LoadError) as error:
        if loader:
            try:
                loader.close(failed=True)
            except LoadError as also:
                log(f"error: {also}")
        log(f"error: {error}")
        sys.exit(1)
    loader.close(failed=False)
