"""A run's history as the emulator serves it: W&B's JSON encodings, sampling, the history
keys summary, and the parquet files of exported history (each computed once per run length)."""

from __future__ import annotations

import functools
import io
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tap_wandb.emulator.store import Run


def wire_json(value: Any) -> str:
    """Encode a JSONString field: W&B leaves bare NaN/Infinity inside these strings."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


def strict(value: Any) -> Any:
    """Replace non-finite floats by null, for the (strict JSON) outer response."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return value


def evenly_sampled(rows: list[Any], samples: int | None) -> list[Any]:
    """Deterministic down-sampling that keeps the first and last row."""
    if samples is None or samples >= len(rows):
        return list(rows)
    if samples <= 0:
        return []
    if samples == 1:
        return [rows[-1]]
    last = len(rows) - 1
    picks = sorted({round(i * last / (samples - 1)) for i in range(samples)})
    return [rows[i] for i in picks]


def warm_history(run: Run) -> None:
    """Encode a run's rows now rather than on the first history request."""
    encoded_history(run, len(run.history))


@functools.lru_cache(maxsize=8192)
def encoded_history(run: Run, history_length: int) -> tuple[list[int], list[str]]:
    """The run's steps and wire-encoded rows, computed once per history length."""
    rows = run.history[:history_length]
    return [row["_step"] for row in rows], [wire_json(row) for row in rows]


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return value.get("_type", "object") if isinstance(value.get("_type"), str) else "object"
    if isinstance(value, list):
        return "list"
    return "nil"


def history_keys(run: Run) -> dict[str, Any]:
    return _history_keys(run, len(run.history))


@functools.lru_cache(maxsize=8192)
def _history_keys(run: Run, history_length: int) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for row in run.history[:history_length]:
        for key, value in row.items():
            by_type = counts.setdefault(key, {})
            name = _type_name(value)
            by_type[name] = by_type.get(name, 0) + 1
    result: dict[str, Any] = {
        "keys": {
            key: {"typeCounts": [{"type": t, "count": c} for t, c in by_type.items()]}
            for key, by_type in counts.items()
        }
    }
    if run.history:
        result["lastStep"] = run.last_step
    return result


def _arrow_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if all(isinstance(v, str) for v in present):
        return pa.string()
    raise ValueError("parquet exports hold scalar columns only")


def parquet_files(run: Run) -> list[bytes]:
    """The run's exported history as parquet files (every column present, null where unlogged)."""
    return _parquet_files(run, len(run.history), run.exported_before_step)


@functools.lru_cache(maxsize=1024)
def _parquet_files(run: Run, history_length: int, exported_before_step: int) -> list[bytes]:
    rows = run.history[:history_length]
    rows = [row for row in rows if row["_step"] < exported_before_step]
    keys: list[str] = ["_step"]
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    files = []
    for start in range(0, len(rows), run.rows_per_parquet_file):
        chunk = rows[start : start + run.rows_per_parquet_file]
        columns = {}
        for key in keys:
            values = [row.get(key) for row in chunk]
            columns[key] = pa.array(values, type=_arrow_type(values))
        sink = io.BytesIO()
        pq.write_table(pa.table(columns), sink, row_group_size=5_000)
        files.append(sink.getvalue())
    return files
