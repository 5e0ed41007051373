"""history: each run's metric rows, every one (``full``) or W&B's sample (``sampled``)."""

from __future__ import annotations

import datetime as dt
import time
import typing as t
from functools import cached_property

from singer_sdk import typing as th
from typing_extensions import override

from tap_wandb.history import HistoryStats, RunRef
from tap_wandb.history_rows import Batch
from tap_wandb.streams.base import BLOB, RUN_KEY, RunChildStream
from tap_wandb.streams.runs import RunsStream
from tap_wandb.streams.sdk_private import records_pass_unchanged

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

Batches = t.Iterator[Batch]


class HistoryStream(RunChildStream):
    """One record per history row. Reading starts at the run's resume point (its context's
    ``first_step``), and upcoming runs are read ahead on worker threads."""

    name = "history"
    parent_stream_type = RunsStream
    primary_keys = ("entity", "project", "run_id", "step")
    schema = th.PropertiesList(
        *RUN_KEY.wrapped.values(),
        th.Property("step", th.IntegerType, required=True, description="The row's _step"),
        th.Property(
            "metrics",
            BLOB,
            description="Every other key of the row, _runtime and _timestamp included",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefetched_stats: dict[tuple, HistoryStats] = {}
        self.rows_read = 0  # over the whole sync, for progress logs
        self.rows_written_directly = 0

    @property
    def reads_all_rows(self) -> bool:
        """Whether this sync reads every history row (so a run's resume point moves)."""
        return self.selected and self.config["history_mode"] == "full"

    @cached_property
    def _direct_write(self) -> bool:
        return records_pass_unchanged(self)

    @staticmethod
    def _key(context: Context | dict[str, t.Any]) -> tuple:
        run = RunRef(context["entity"], context["project"], context["run_id"])
        return run, context["first_step"], context["last_step"]

    def _rows(self, run: RunRef, first_step: int, last_step: int, stats: HistoryStats) -> Batches:
        reader = self.wandb.history_reader
        if self.config["history_mode"] == "sampled":
            return reader.sampled(run, self.config["history_samples"], stats)
        return reader.full(run, first_step, last_step, stats)

    def prefetch(self, context: dict[str, t.Any]) -> None:
        """Start reading a run's history in the background (runs are taken in this order);
        ``context`` is the one the run's children will be synced with."""
        prefetcher = self.wandb.prefetcher
        mode = self.config["history_mode"]
        run, first_step, last_step = key = self._key(context)
        if prefetcher is None or mode == "off" or (mode == "full" and last_step < first_step):
            return
        stats = HistoryStats()
        self._prefetched_stats[key] = stats
        prefetcher.submit(key, lambda: self._rows(run, first_step, last_step, stats))

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        if self.config["history_mode"] == "off":
            return
        key = self._key(context)
        run = key[0]
        started = time.monotonic()
        prefetched = self.wandb.prefetcher.take(key) if self.wandb.prefetcher else None
        if prefetched is not None:
            batches, stats = prefetched, self._prefetched_stats.pop(key)
        else:
            stats = HistoryStats()
            batches = self._rows(*key, stats)
        entity, project, run_id = run.entity, run.project, run.run_id
        records = (
            [
                {
                    "entity": entity,
                    "project": project,
                    "run_id": run_id,
                    "step": step,
                    "metrics": values,
                }
                for step, values in batch
            ]
            for batch in batches
        )
        if self._direct_write:
            self._write_directly(records)
        else:
            for batch in records:
                yield from batch
        self.rows_read += stats.rows
        if stats.rows >= 10_000:
            self.wandb.logger.info(
                "history of %s: %d rows (%d parquet files, %d windows) in %.1f s",
                run, stats.rows, stats.parquet_files, stats.windows, time.monotonic() - started,
            )  # fmt: skip

    def _write_directly(self, batches: t.Iterator[list[dict[str, t.Any]]]) -> None:
        # History is most of a sync's volume, and the SDK's per-record path (mapping, child
        # contexts, state) costs more than reading it. These records are already
        # schema-exact and finite, and history has no children or bookmarks of its own.
        write = self.wandb.message_writer.write_records
        stamp = dt.datetime.now(dt.UTC).isoformat()
        written = 0
        for records in batches:
            write(self.name, records, stamp)
            written += len(records)
        self.rows_written_directly += written
        self.get_record_counter().increment(written)
