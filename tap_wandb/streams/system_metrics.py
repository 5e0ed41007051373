"""system_metrics: each run's system-metrics rows (CPU, memory, GPUs, ...), as W&B samples
them: what the official client's ``run.history(stream="system", samples=N)`` returns.

The runs page carries the sample (``Run.events``). W&B only serves a sample, and it changes
while the run grows, so it is read once the run has ended (``RunsState.child_context``
decides when).
"""

from __future__ import annotations

import datetime as dt
import math
import typing as t

from singer_sdk import typing as th
from typing_extensions import override

from tap_wandb.streams.base import BLOB, RUN_KEY, RunChildStream
from tap_wandb.streams.runs import RunsStream
from tap_wandb.values import finite_object, loads

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

# Keys of a row that are not metrics: its time, and the client's marker of system rows.
NOT_METRICS = frozenset({"_timestamp", "_runtime", "_wandb"})


def _number(value: t.Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _timestamp(value: t.Any) -> str | None:
    """Epoch seconds as RFC 3339 UTC with microseconds (None: not a usable time)."""
    seconds = _number(value)
    if seconds is None:
        return None
    try:
        when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return when.isoformat(timespec="microseconds")


def _row(text: t.Any) -> dict[str, t.Any] | None:
    """A row of W&B's sample: a JSON string (NaN may be bare inside) holding an object."""
    if isinstance(text, str):
        try:
            text = loads(text)
        except (ValueError, RecursionError):
            return None
    return text if isinstance(text, dict) else None


class SystemMetricsStream(RunChildStream):
    """One record per sampled system-metrics row of each ended run."""

    name = "system_metrics"
    parent_stream_type = RunsStream
    primary_keys = ("entity", "project", "run_id", "timestamp")
    schema = th.PropertiesList(
        *RUN_KEY.wrapped.values(),
        th.Property(
            "timestamp", th.DateTimeType, required=True, description="When it was read (UTC)"
        ),
        th.Property("runtime", th.NumberType, description="Seconds since the run started"),
        th.Property(
            "metrics",
            BLOB,
            description="Every other key of the row (system.cpu, system.gpu.0.gpu, ...); "
            "NaN and Infinity become null",
        ),
    ).to_dict()

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        if not context["system_metrics"]:
            return
        where = f"run {context['entity']}/{context['project']}/{context['run_id']}"
        seen: set[str] = set()
        skipped = 0
        for text in self.current_run(context).get("events") or []:
            row = _row(text)
            timestamp = _timestamp(row.get("_timestamp")) if row else None
            if row is None or timestamp is None:
                skipped += 1
                continue
            if timestamp in seen:
                continue  # the key: one row per time
            seen.add(timestamp)
            metrics = {key: value for key, value in row.items() if key not in NOT_METRICS}
            yield self.keyed(
                context,
                timestamp=timestamp,
                runtime=_number(row.get("_runtime")),
                metrics=finite_object(
                    metrics, what="system metrics", where=where, logger=self.logger
                ),
            )
        if skipped:
            self.logger.warning(
                "%s: %d system-metrics rows without a JSON object and a _timestamp skipped",
                where, skipped,
            )  # fmt: skip
