"""The bulk history converters give what W&B's rows mean, row by row: each row decoded on its
own with Python's json (as W&B's client reads it) and cleaned by values.history_metrics."""

from __future__ import annotations

import json
import logging
import math

import pyarrow as pa

from tap_wandb.history_parquet import table_batches
from tap_wandb.history_rows import text_batch
from tap_wandb.values import history_metrics, step_of

LOGGER = logging.getLogger("test")


def _one_by_one(lines: list[str], keys=None) -> list[tuple[int, dict]]:
    expected = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = step_of(row.get("_step")) if isinstance(row, dict) else None
        metrics = history_metrics(row, keys) if step is not None else None
        if step is not None and (keys is None or metrics):
            expected.append((step, metrics))
    return expected


def _batch(lines: list[str], keys=None) -> list[tuple[int, dict]]:
    return text_batch(lines, keys, where="run r", logger=LOGGER)


def _same(actual: list, expected: list) -> None:
    # NaN never equals itself, so compare the JSON texts (NaN must not be left anyway).
    assert json.dumps(actual, allow_nan=False) == json.dumps(expected, allow_nan=False)


FLAT = [json.dumps({"_step": i, "_runtime": i * 0.5, "loss": 1 / (i + 1)}) for i in range(50)]


def test_a_flat_page_is_decoded_whole_and_keeps_every_value():
    _same(_batch(FLAT), _one_by_one(FLAT))


def test_non_finite_values_become_null_and_their_keys_stay():
    lines = [
        *FLAT,
        '{"_step": 60, "loss": NaN, "acc": 0.5}',
        '{"_step": 61, "grad": Infinity, "neg": -Infinity}',
        '{"_step": 62, "big": 1e999, "fine": 1e-999}',
        '{"_step": 63, "text": "NaN and Infinity", "x": 1}',
    ]
    batch = _batch(lines)
    _same(batch, _one_by_one(lines))
    assert batch[-4][1] == {"loss": None, "acc": 0.5}
    assert batch[-2][1] == {"big": None, "fine": 0.0}
    assert batch[-1][1]["text"] == "NaN and Infinity"


def test_a_flat_page_with_nan_keeps_words_inside_strings():
    nan_rows = [
        '{"_step": 70, "loss": NaN, "acc": -Infinity, "grad": Infinity}',
        '{"_step": 71, "note": "ok", "lr": 0.1}',
    ]
    _same(_batch([*FLAT, *nan_rows]), _one_by_one([*FLAT, *nan_rows]))
    worded = [*nan_rows, '{"_step": 72, "NaN": "-Infinity", "x": NaN}']
    batch = _batch(worded)
    _same(batch, _one_by_one(worded))
    assert batch[-1][1] == {"NaN": "-Infinity", "x": None}


def test_huge_numbers_without_nan_in_the_page():
    lines = ['{"_step": 1, "big": 1e999}', '{"_step": 2, "x": -1E+400}', '{"_step": 3, "y": 2}']
    _same(_batch(lines), [(1, {"big": None}), (2, {"x": None}), (3, {"y": 2})])


def test_rows_needing_cleaning_or_odd_steps_match_row_by_row_decoding():
    lines = [
        '{"_step": 1, "w": {"_type": "histogram", "values": [1, NaN]}}',
        '{"_step": 2.0, "x": 1}',
        '{"_step": 2.5, "x": 1}',
        '{"_step": true, "x": 1}',
        '{"x": 1}',
        '{"_step": 5, "caf\\u00e9": "\\udcff"}',
        '{"_step": 6, "s": "{"}',
        "[1, 2]",
        "not json",
        '{"_step": 7, "a": 1',
        '{"_step": 8, "b": 2}',
    ]
    _same(_batch(lines), _one_by_one(lines))
    for index in range(len(lines)):  # each odd row also inside an otherwise flat page
        page = [*FLAT[:5], lines[index], *FLAT[5:10]]
        _same(_batch(page), _one_by_one(page))


def test_lines_that_only_join_into_objects_are_not_taken_as_rows():
    lines = ['{"_step": 1, "a": "x', '{"b": 1}"}', '{"_step": 2, "a": 1}']
    _same(_batch(lines), _one_by_one(lines))
    lines = ['{"_step": 1, "a": 1', '{"_step": 2}}']
    _same(_batch(lines), _one_by_one(lines))
    lines = ['{"_step": 1, "a": "x', '{y"}']  # joined: one valid object
    _same(_batch(lines), _one_by_one(lines))


def test_keys_filter_drops_other_keys_and_empty_rows():
    keys = frozenset({"loss"})
    lines = [*FLAT[:3], '{"_step": 9, "acc": 1}']
    _same(_batch(lines, keys), _one_by_one(lines, keys))


def table_batch(table: pa.Table, *args, size: int = 1000, **kwargs) -> list:
    return [row for batch in table_batches(table, *args, size=size, **kwargs) for row in batch]


def _rows_of(table: pa.Table, first: int, last: int, keys_filtered: bool = False) -> list:
    """The meaning of a parquet export, row by row: null cells are keys not logged."""
    expected = []
    for row in table.to_pylist():
        step = step_of(row.pop("_step"))
        if step is None or not first <= step <= last:
            continue
        metrics = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in row.items()
            if value is not None
        }
        if not (keys_filtered and not metrics):
            expected.append((step, metrics))
    return expected


def test_a_parquet_table_gives_each_row_as_logged():
    table = pa.table(
        {
            "_step": pa.array([0, 1, 2, 3, 4, None, 6], pa.int64()),
            "loss": [0.5, math.nan, None, math.inf, -math.inf, 1.0, 2.0],
            "epoch": pa.array([1, None, None, 2, None, 3, None], pa.int64()),
            "name": ["a", None, "c", None, None, "f", None],
            "ok": [True, None, False, None, None, None, None],
        }
    )
    for first, last in ((0, 100), (1, 3), (5, 5)):
        _same(table_batch(table, first, last), _rows_of(table, first, last))
    for size in (1, 2, 3):  # converted a slice at a time
        _same(table_batch(table, 0, 100, size=size), _rows_of(table, 0, 100))
    batch = table_batch(table, 0, 100)
    assert batch[1] == (1, {"loss": None})  # NaN was logged: its key stays
    assert batch[2] == (2, {"name": "c", "ok": False})  # null cells were not logged


def test_float_or_other_step_columns_and_empty_rows():
    floats = pa.table({"_step": [0.0, 1.5, 2.0, math.nan, None], "x": [1, 2, 3, 4, 5]})
    _same(table_batch(floats, 0, 10), _rows_of(floats, 0, 10))
    strings = pa.table({"_step": ["0", "1"], "x": [1, 2]})
    assert table_batch(strings, 0, 10) == []
    sparse = pa.table({"_step": [0, 1], "x": [None, 2.0]})
    _same(table_batch(sparse, 0, 10, keys_filtered=True), _rows_of(sparse, 0, 10, True))
    only_steps = pa.table({"_step": [3, 4]})
    assert table_batch(only_steps, 0, 10) == [(3, {}), (4, {})]
