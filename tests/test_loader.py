"""target-wandb-duckdb (loader/), the default DuckDB loader: Singer messages in, DuckDB read back.

Each test runs the installed command as Meltano does (`--config FILE`, messages on stdin).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
LOADER = REPO / ".venv" / "bin" / "target-wandb-duckdb"
EXTRACTED = "2026-03-01T10:00:00.123456+00:00"


def schema(stream: str, properties: dict, keys: list[str]) -> dict:
    return {"type": "SCHEMA", "stream": stream, "key_properties": keys,
            "schema": {"type": "object", "properties": properties}}  # fmt: skip


def record(stream: str, row: dict, extracted: str = EXTRACTED) -> dict:
    return {"type": "RECORD", "stream": stream, "record": row, "time_extracted": extracted}


def state(value: Any) -> dict:
    return {"type": "STATE", "value": value}


def load(
    tmp_path: Path, messages: list[dict | bytes], **settings: Any
) -> subprocess.CompletedProcess[str]:
    """Run the loader on ``messages`` (dicts as JSON lines, bytes as they are)."""
    config = tmp_path / "config.json"
    settings = {"path": str(tmp_path / "w.duckdb"), "default_target_schema": "wandb", **settings}
    config.write_text(json.dumps(settings))
    lines = b"".join(
        (m if isinstance(m, bytes) else json.dumps(m).encode()) + b"\n" for m in messages
    )
    return subprocess.run(
        [str(LOADER), "--config", str(config)], input=lines, capture_output=True, timeout=120
    )


def loaded(tmp_path: Path, *messages: dict | bytes, **settings: Any) -> list[Any]:
    """Load; the run must succeed. Returns the states it emitted."""
    done = load(tmp_path, list(messages), **settings)
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.splitlines()]


def query(tmp_path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with contextlib.closing(duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)) as con:
        return con.execute(sql, params or []).fetchall()


HISTORY = schema(
    "history",
    {"run_id": {"type": ["string"]}, "step": {"type": ["integer"]},
     "metrics": {"type": ["object", "null"]}, "_sdc_deleted_at": {"type": ["string", "null"]}},
    ["run_id", "step"],
)  # fmt: skip


def test_every_type_lands_as_target_duckdb_typed_it(tmp_path):
    properties = {
        "id": {"type": ["string"]},
        "text": {"type": ["string", "null"]},
        "at": {"type": ["string", "null"], "format": "date-time"},
        "clock": {"type": ["string", "null"], "format": "time"},
        "count": {"type": ["integer", "null"]},
        "ratio": {"type": ["number", "null"]},
        "either": {"type": ["integer", "number"]},
        "flag": {"type": ["boolean", "null"]},
        "obj": {"type": ["object", "null"]},
        "list": {"type": ["array", "null"]},
        "mixed": {"type": ["string", "integer", "null"]},
        "anything": {},
    }
    row = {"id": "a", "text": "héllo ✓ 学习", "at": "2026-03-01T12:30:00.5+02:00",
           "clock": "10:11:12", "count": 9007199254740993, "ratio": 0.1, "either": 3,
           "flag": True, "obj": {"x": [1, {"y": None}], "é": 1.5}, "list": [1, "two"],
           "mixed": 7, "anything": "text"}  # fmt: skip
    empty = {"id": "b", "text": "", "at": "2026-03-01T10:00:00Z", "mixed": "seven"}
    before = datetime.now(UTC).replace(tzinfo=None)
    loaded(tmp_path, schema("things", properties, ["id"]), record("things", row),
           record("things", empty))  # fmt: skip
    after = datetime.now(UTC).replace(tzinfo=None)

    columns_sql = ("SELECT column_name, data_type FROM information_schema.columns "
                   "WHERE table_schema = 'wandb' AND table_name = 'things'")  # fmt: skip
    types = dict(query(tmp_path, columns_sql))
    assert types == {
        "_sdc_batched_at": "TIMESTAMP", "_sdc_deleted_at": "VARCHAR",
        "_sdc_extracted_at": "TIMESTAMP", "id": "VARCHAR", "text": "VARCHAR", "at": "TIMESTAMP",
        "clock": "TIME", "count": "BIGINT", "ratio": "DOUBLE", "either": "DOUBLE",
        "flag": "BOOLEAN", "obj": "JSON", "list": "JSON", "mixed": "JSON", "anything": "JSON",
    }  # fmt: skip
    key_sql = ("SELECT constraint_text FROM duckdb_constraints() "
               "WHERE table_name = 'things' AND constraint_type = 'PRIMARY KEY'")  # fmt: skip
    [key] = query(tmp_path, key_sql)
    assert key == ("PRIMARY KEY(id)",)
    columns = list(properties)
    rows = query(tmp_path, f"SELECT {', '.join(map(repr, columns)).replace(chr(39), chr(34))}, "
                           "_sdc_extracted_at, _sdc_batched_at, _sdc_deleted_at FROM wandb.things "
                           "ORDER BY id")  # fmt: skip
    got = [dict(zip([*columns, "extracted", "batched", "deleted"], r, strict=True)) for r in rows]
    first, second = got
    assert first["text"] == row["text"] and second["text"] == ""  # empty strings stay empty
    assert first["at"] == datetime(2026, 3, 1, 10, 30, 0, 500000)  # UTC
    assert second["at"] == datetime(2026, 3, 1, 10, 0, 0)
    assert str(first["clock"]) == "10:11:12"
    assert first["count"] == 9007199254740993  # exact, not through a double
    assert (first["ratio"], first["either"], first["flag"]) == (0.1, 3.0, True)
    for name in ("obj", "list", "mixed", "anything"):
        assert json.loads(first[name]) == row[name], name
    assert json.loads(second["mixed"]) == "seven"
    assert second["count"] is None and second["obj"] is None and second["flag"] is None
    assert first["extracted"] == datetime(2026, 3, 1, 10, 0, 0, 123456)
    assert before <= first["batched"] <= after and first["deleted"] is None


def test_a_changed_record_replaces_its_row_in_a_later_run(tmp_path):
    loaded(tmp_path, HISTORY, record("history", {"run_id": "r", "step": 1, "metrics": {"a": 1}}),
           record("history", {"run_id": "r", "step": 2, "metrics": {"a": 2}}))  # fmt: skip
    [(first_batch,)] = query(tmp_path, "SELECT max(_sdc_batched_at) FROM wandb.history")
    loaded(tmp_path, HISTORY, record("history", {"run_id": "r", "step": 2, "metrics": {"a": 3}}),
           record("history", {"run_id": "r", "step": 3, "metrics": None}))  # fmt: skip
    rows = query(tmp_path, "SELECT step, metrics, _sdc_batched_at > ? FROM wandb.history "
                           "ORDER BY step", [first_batch])  # fmt: skip
    assert [(s, json.loads(m) if m else None, newer) for s, m, newer in rows] == [
        (1, {"a": 1}, False), (2, {"a": 3}, True), (3, None, True)]  # fmt: skip


@pytest.mark.parametrize("batch_size_rows", [100, 2], ids=["one-batch", "batches-of-2"])
def test_duplicate_keys_keep_the_last_record(tmp_path, batch_size_rows):
    messages = [HISTORY] + [
        record("history", {"run_id": "r", "step": step % 2, "metrics": {"n": n}})
        for n, step in enumerate([0, 1, 0, 0, 1, 0, 1])
    ]
    loaded(tmp_path, *messages, batch_size_rows=batch_size_rows)
    rows = query(tmp_path, "SELECT step, metrics FROM wandb.history ORDER BY step")
    assert [(s, json.loads(m)) for s, m in rows] == [(0, {"n": 5}), (1, {"n": 6})]


@pytest.mark.parametrize("hard_delete", [True, False])
def test_tombstones_delete_or_flag_their_rows(tmp_path, hard_delete):
    deleted_at = "2026-03-02T00:00:00+00:00"
    loaded(tmp_path, HISTORY,
           *(record("history", {"run_id": "r", "step": s, "metrics": {"s": s}}) for s in range(4)),
           hard_delete=hard_delete)  # fmt: skip
    loaded(tmp_path, HISTORY,
           record("history", {"run_id": "r", "step": 1, "_sdc_deleted_at": deleted_at}),
           # deleted, then written again in the same batch: the last one counts
           record("history", {"run_id": "r", "step": 2, "_sdc_deleted_at": deleted_at}),
           record("history", {"run_id": "r", "step": 2, "metrics": {"s": 22}}),
           # written, then deleted in the same batch
           record("history", {"run_id": "r", "step": 4, "metrics": {"s": 4}}),
           record("history", {"run_id": "r", "step": 4, "_sdc_deleted_at": deleted_at}),
           hard_delete=hard_delete)  # fmt: skip
    rows = query(tmp_path, "SELECT step, metrics, _sdc_deleted_at FROM wandb.history ORDER BY step")
    got = [(s, json.loads(m) if m else None, d) for s, m, d in rows]
    if hard_delete:
        assert got == [(0, {"s": 0}, None), (2, {"s": 22}, None), (3, {"s": 3}, None)]
    else:
        assert got == [(0, {"s": 0}, None), (1, None, deleted_at), (2, {"s": 22}, None),
                       (3, {"s": 3}, None), (4, None, deleted_at)]  # fmt: skip


def test_a_later_schema_adds_columns_and_a_changed_type_is_refused(tmp_path):
    v1 = schema("runs", {"id": {"type": "string"}, "n": {"type": "integer"}}, ["id"])
    v2 = schema("runs", {"id": {"type": "string"}, "n": {"type": "integer"},
                         "tags": {"type": ["array", "null"]}}, ["id"])  # fmt: skip
    loaded(tmp_path, v1, record("runs", {"id": "a", "n": 1}), v2,
           record("runs", {"id": "b", "n": 2, "tags": ["x"]}))  # fmt: skip
    loaded(tmp_path, v2, record("runs", {"id": "c", "n": 3, "tags": []}))
    rows = query(tmp_path, "SELECT id, n, tags FROM wandb.runs ORDER BY id")
    assert rows == [("a", 1, None), ("b", 2, '["x"]'), ("c", 3, "[]")]

    v3 = schema("runs", {"id": {"type": "string"}, "n": {"type": "number"}}, ["id"])
    failed = load(tmp_path, [v3, record("runs", {"id": "d", "n": 0.5})])
    assert failed.returncode == 1
    message = failed.stderr.decode()
    assert "stream runs: column n of wandb.runs is BIGINT" in message, message
    assert "now makes it DOUBLE" in message and "alter or drop the column" in message
    assert query(tmp_path, "SELECT count(*) FROM wandb.runs") == [(3,)]


def test_state_is_emitted_only_after_what_precedes_it_is_committed(tmp_path):
    """Batches of 2: the STATE after records 3-4 comes out once they are committed; the one
    after them does not, because the batch after it fails."""
    rows = [record("history", {"run_id": "r", "step": s}) for s in range(6)]
    bad = record("history", {"run_id": "r", "step": "six"})
    messages = [HISTORY, *rows[:2], state({"n": 1}), *rows[2:4], state({"n": 2}), rows[4], bad]
    done = load(tmp_path, messages, batch_size_rows=2)
    log = done.stderr.decode()
    assert done.returncode == 1, log
    assert [json.loads(line) for line in done.stdout.splitlines()] == [{"n": 1}]
    assert query(tmp_path, "SELECT step FROM wandb.history ORDER BY step") == [
        (s,) for s in range(4)
    ]
    # What failed, where, and where the batch's records are kept.
    assert "stream history, column step: six is not an integer (input line 9)" in log, log
    kept = re.search(r"kept in (\S+) ", log)
    assert kept, log
    files = [p for p in Path(kept[1]).rglob("*.jsonl") if b'"six"' in p.read_bytes()]
    assert len(files) == 1


def test_the_last_state_is_emitted_at_the_end_even_without_records(tmp_path):
    row = record("history", {"run_id": "r", "step": 0})
    states = loaded(tmp_path, HISTORY, state({"n": 1}), row, state({"n": 2}), state({"n": 3}))
    assert states == [{"n": 3}]
    assert loaded(tmp_path / "..", state({"only": True})) == [{"only": True}]


def test_a_stream_named_like_the_staging_table_upserts(tmp_path):
    rows = schema(
        "batch_rows", {"k": {"type": "integer"}, "v": {"type": ["string", "null"]}}, ["k"]
    )
    loaded(tmp_path, rows, record("batch_rows", {"k": 1, "v": "a"}))
    loaded(tmp_path, rows, record("batch_rows", {"k": 1, "v": "b"}), record("batch_rows", {"k": 2}))
    assert query(tmp_path, "SELECT k, v FROM wandb.batch_rows ORDER BY k") == [(1, "b"), (2, None)]


def test_a_stream_without_records_gets_its_table(tmp_path):
    loaded(tmp_path, HISTORY, state({"n": 1}))
    assert query(tmp_path, "SELECT count(*) FROM wandb.history") == [(0,)]


def test_streams_without_keys_are_appended(tmp_path):
    events = schema("events", {"what": {"type": ["string", "null"]}}, [])
    loaded(tmp_path, events, record("events", {"what": "x"}), record("events", {"what": "x"}),
           record("events", {}))  # fmt: skip
    loaded(tmp_path, events, record("events", {"what": "x"}))
    assert query(tmp_path, "SELECT what, count(*) FROM wandb.events GROUP BY ALL ORDER BY 1") == [
        ("x", 3), (None, 1)]  # fmt: skip


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([HISTORY, b'{"type": "RECORD", "stream": "history", "record": {"run_id": "r",}}'],
         "input line 2: not a Singer message: JSON is malformed"),
        ([HISTORY, b'{"type":"RECORD","stream":"history","record":{"run_id":"r","step":0,'
                   b'"metrics":{"loss":NaN}}}'],
         "(NaN and Infinity are not JSON)"),
        ([HISTORY, record("runs", {"id": "a"})],
         "input line 2: RECORD of stream 'runs' before its SCHEMA"),
        ([HISTORY, record("history", [1, 2])],
         "input line 2: stream history: the record is not a JSON object"),
        ([{"type": "BATCH", "stream": "history"}],
         "input line 1: message type 'BATCH' is not supported"),
        ([schema("history", {"a": {"type": "string"}}, ["b"])],
         "input line 1: stream history: key_properties ['b'] are not in its schema"),
        ([HISTORY, record("history", {"run_id": "r", "step": 1.5})],
         "stream history, column step: 1.5 is not an integer (input line 2)"),
        ([HISTORY, record("history", {"run_id": "r", "step": 1, "metrics": {}}),
          schema("history", {"run_id": {"type": "string"}, "step": {"type": "integer"},
                             "metrics": {"type": "number"}}, ["run_id", "step"]),
          record("history", {"run_id": "r", "step": 2, "metrics": "high"})],
         "column metrics of wandb.history is JSON, but the stream's SCHEMA now makes it DOUBLE"),
        ([HISTORY, record("history", {"run_id": None, "step": 1})],
         "stream history: Constraint Error: NOT NULL constraint failed: history.run_id"),
    ],
    ids=["invalid-json", "nan", "record-before-schema", "not-an-object", "batch-message",
         "unknown-key", "fraction-in-integer", "type-changed", "null-key"],
)  # fmt: skip
def test_errors_say_what_and_where(tmp_path, messages, expected):
    done = load(tmp_path, messages)
    assert done.returncode == 1
    assert expected in done.stderr.decode(), done.stderr.decode()


def test_a_value_duckdb_cannot_convert_names_stream_column_and_line(tmp_path):
    at = {"type": "string", "format": "date-time"}
    things = schema("things", {"id": {"type": "string"}, "at": at}, ["id"])
    done = load(tmp_path, [things, record("things", {"id": "a", "at": "2026-01-01T00:00:00Z"}),
                           record("things", {"id": "b", "at": "yesterday"})])  # fmt: skip
    log = done.stderr.decode()
    assert done.returncode == 1
    assert (
        "stream things, column at (TIMESTAMP), input line 3: 'yesterday' is not a TIMESTAMP" in log
    )
    assert "kept in" in log


def test_settings(tmp_path):
    about = json.loads(subprocess.run([str(LOADER), "--about"], capture_output=True,
                                      check=True).stdout)  # fmt: skip
    assert about["name"] == "target-wandb-duckdb"
    assert set(about["settings"]["properties"]) == {
        "path", "default_target_schema", "batch_size_rows", "hard_delete"}  # fmt: skip
    missing = load(tmp_path, [HISTORY], path="")
    assert missing.returncode == 1
    assert "the setting `path` (the DuckDB database file) is required" in missing.stderr.decode()
