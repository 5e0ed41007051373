"""History rows from W&B's parquet exports, a slice of a row group at a time.

Imported only once a run has exports: pyarrow adds about 60 MB to the tap's memory.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tap_wandb.history_rows import Batch

ArrowError = pa.ArrowException
# Rows become Python objects this many at a time: a row group can be large.
BATCH_ROWS = 1000


def parquet_batches(
    handle: IO[bytes],
    first_step: int,
    last_step: int,
    keys: frozenset[str] | None,
    *,
    where: str,
    logger: logging.Logger,
) -> Iterator[Batch]:
    """The rows of one export with ``first_step <= _step <= last_step`` (only ``keys``, and
    rows that have one of them, if given), row groups outside those steps skipped."""
    parquet = pq.ParquetFile(handle)
    names = parquet.schema_arrow.names
    if "_step" not in names:
        logger.warning("%s: a history export has no _step column; skipped", where)
        return
    columns = None if keys is None else [n for n in names if n == "_step" or n in keys]
    step_index = names.index("_step")
    for group in range(parquet.num_row_groups):
        bounds = parquet.metadata.row_group(group).column(step_index).statistics
        known = bounds is not None and bounds.has_min_max
        if known and (bounds.max < first_step or bounds.min > last_step):
            continue
        table = parquet.read_row_group(group, columns=columns)
        yield from table_batches(table, first_step, last_step, keys_filtered=columns is not None)


def table_batches(
    table: pa.Table,
    first_step: int,
    last_step: int,
    keys_filtered: bool = False,
    size: int = BATCH_ROWS,
) -> Iterator[Batch]:
    """The rows of a parquet export with an integer ``_step`` in ``[first_step, last_step]``,
    ``size`` rows at a time (Arrow works on the whole table, Python objects on a slice).

    A null cell is a key not logged at that step (left out); a NaN/Infinity cell was logged,
    so its key stays, as None. ``keys_filtered``: rows left without metrics are dropped.
    """
    step_column = table.column("_step")
    if pa.types.is_floating(step_column.type):  # W&B may store _step as 8.0 (step_of)
        whole = pc.and_(pc.is_finite(step_column), pc.equal(pc.floor(step_column), step_column))
        table = table.filter(whole)
        step_column = pc.cast(table.column("_step"), pa.int64())
    elif not pa.types.is_integer(step_column.type):
        return  # no row has an integer _step
    wanted = pc.and_(
        pc.greater_equal(step_column, first_step), pc.less_equal(step_column, last_step)
    )
    table = table.filter(wanted)  # also drops rows whose _step is null
    steps = pc.filter(step_column, wanted)
    names = [name for name in table.column_names if name != "_step"]
    columns = [table.column(name) for name in names]
    non_finite = {
        name: rows
        for name, column in zip(names, columns, strict=True)
        if (rows := _non_finite_rows(column))
    }
    for start in range(0, len(steps), size):
        end = min(start + size, len(steps))
        values = [column.slice(start, size).to_pylist() for column in columns]
        rows = zip(*values, strict=True) if values else ((),) * (end - start)
        # Not zip(strict=True) per row: a row has a value per name, and the check costs 25%.
        metrics = [
            {name: value for name, value in zip(names, row) if value is not None}  # noqa: B905
            for row in rows
        ]
        for name, indices in non_finite.items():
            low, high = bisect.bisect_left(indices, start), bisect.bisect_left(indices, end)
            for index in indices[low:high]:
                metrics[index - start][name] = None
        batch = zip(steps.slice(start, size).to_pylist(), metrics, strict=True)
        yield [(step, values) for step, values in batch if values] if keys_filtered else list(batch)


def _non_finite_rows(column: pa.ChunkedArray) -> list[int]:
    """Rows whose cell holds NaN/Infinity (none for a column that is not floating point)."""
    if not pa.types.is_floating(column.type) or pc.all(pc.is_finite(column)).as_py() is not False:
        return []
    non_finite = pc.fill_null(pc.invert(pc.is_finite(column)), False)
    return pc.indices_nonzero(non_finite).to_pylist()
