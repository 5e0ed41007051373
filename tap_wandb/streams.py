"""runs, configs, summaries and history: thin streams over the client and the readers.

``runs`` is the parent: one page of runs per request, config and summary included. Its
children read what they need from the run being processed, so they cost no requests, except
``history``, which reads the run's metric history.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import typing as t
from functools import cached_property

from singer_sdk import Stream, metrics
from singer_sdk import typing as th
from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from typing_extensions import override

from tap_wandb import queries
from tap_wandb.client import WandbResponseError, dumps_filters
from tap_wandb.history import HistoryStats, RunRef
from tap_wandb.values import (
    TERMINAL_STATES,
    config_entries,
    decode_json_string,
    rfc3339,
    unwrap_config,
    wandb_filter_time,
)

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

    from tap_wandb.tap import TapWandb

# Blobs stay whole objects: ObjectType() would vanish from SCHEMA under flattening.
BLOB = th.CustomType({"type": ["object", "null"]})
ANY_JSON = th.CustomType(
    {"type": ["string", "number", "integer", "boolean", "object", "array", "null"]}
)
RUN_KEY = th.PropertiesList(
    th.Property("entity", th.StringType, required=True, description="W&B entity (user or team)"),
    th.Property("project", th.StringType, required=True, description="W&B project name"),
    th.Property(
        "run_id", th.StringType, required=True, description="Short run id (the client's run.id)"
    ),
)


class WandbStream(Stream):
    """Common ground of the tap's streams: the tap's client and settings."""

    _tap: TapWandb
    # Records are built schema-exact, JSON-ready and finite, so the SDK's per-value
    # conforming (a third of its cost per record) has nothing to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    @property
    def wandb(self) -> TapWandb:
        return self._tap


class _Progress:
    """Progress a person can follow during a long sync: runs done of the project's total, and
    history rows read."""

    def __init__(self, logger: logging.Logger, project: str, history: HistoryStream) -> None:
        self.logger, self.project, self.history = logger, project, history
        self.history_at_start = history.rows_read
        self.total: int | None = None
        self.done = 0
        self.last_log = time.monotonic()

    def start(self, total: int | None) -> None:
        self.total = total
        self.logger.info("%s: %s runs to read", self.project, total)

    def run_done(self) -> None:
        self.done += 1
        if time.monotonic() - self.last_log > 15:
            self.logger.info(
                "%s: %d of %s runs done, %d history rows",
                self.project, self.done, self.total, self.history.rows_read - self.history_at_start,
            )  # fmt: skip
            self.last_log = time.monotonic()

    def finish(self) -> None:
        self.logger.info(
            "%s: %d runs emitted, %d history rows",
            self.project, self.done, self.history.rows_read - self.history_at_start,
        )  # fmt: skip


class RunsStream(WandbStream):
    """Runs of every selected project, oldest first, with their config and summary.

    Each project is a state partition holding the ``created_at`` bookmark, the runs created
    in the bookmark's second, and the runs not yet finished (with the last history step
    already emitted), so unfinished runs are read again until they end.
    """

    name = "runs"
    primary_keys = ("entity", "project", "run_id")
    replication_key = "created_at"
    is_sorted = True
    schema = th.PropertiesList(
        *RUN_KEY.wrapped.values(),
        th.Property("storage_id", th.StringType, description="W&B's global run ID"),
        th.Property(
            "display_name", th.StringType, description="Human-readable name (client's run.name)"
        ),
        th.Property("state", th.StringType, description="running, finished, failed, crashed…"),
        th.Property("created_at", th.DateTimeType, description="Run creation time, UTC"),
        th.Property("heartbeat_at", th.DateTimeType, description="Last heartbeat, UTC"),
        th.Property("tags", th.ArrayType(th.StringType)),
        th.Property("notes", th.StringType),
        th.Property("description", th.StringType),
        th.Property("group", th.StringType),
        th.Property("job_type", th.StringType),
        th.Property("commit", th.StringType),
        th.Property("sweep_name", th.StringType),
        th.Property("user", th.StringType, description="Username of the run's owner"),
        th.Property("history_line_count", th.IntegerType, description="History rows logged"),
        th.Property("history_last_step", th.IntegerType, description="Highest _step logged"),
        th.Property("config", BLOB, description="Config, unwrapped as the client's run.config"),
        th.Property("summary", BLOB, description="Summary metrics (client's run.summary)"),
        th.Property("system_metrics", BLOB, description="Latest system metrics"),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # The raw config and summary of the run being processed, for the child streams.
        self.current_run: dict[str, t.Any] = {}

    @override
    def sync(self, context: Context | None = None) -> None:
        # The parent of every other stream: when it is done, the sync is.
        try:
            super().sync(context)
        finally:
            self.wandb.finish_sync()

    @property
    def check_sorted(self) -> bool:
        # Unfinished runs are re-read and sort before the bookmark; the bookmark itself is
        # kept monotonic in get_records.
        return False

    @property
    def partitions(self) -> list[dict[str, str]]:
        return [{"entity": e, "project": p} for e, p in self.wandb.project_paths]

    def _filters(
        self, bookmark: dt.datetime | None, unfinished: dict[str, int]
    ) -> dict[str, t.Any]:
        clauses: list[dict[str, t.Any]] = []
        if self.wandb.run_filters:
            clauses.append(self.wandb.run_filters)
        start_date = self.wandb.start_date
        if start_date:
            clauses.append({"createdAt": {"$gte": wandb_filter_time(start_date)}})
        if bookmark:
            since = {"createdAt": {"$gte": wandb_filter_time(bookmark)}}
            if unfinished:
                since = {"$or": [since, {"name": {"$in": sorted(unfinished)}}]}
            clauses.append(since)
        if len(clauses) > 1:
            return {"$and": clauses}
        return clauses[0] if clauses else {}

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        entity, project = context["entity"], context["project"]
        state = self.get_context_state(context)
        bookmark_text = state.get("replication_key_value")
        bookmark = dt.datetime.fromisoformat(bookmark_text) if bookmark_text else None
        unfinished: dict[str, int] = dict(state.get("unfinished_runs") or {})
        done_at_bookmark = set(state.get("runs_at_bookmark") or ())
        newest, at_newest = bookmark_text, set(done_at_bookmark)
        seen: set[str] = set()
        history = self.wandb.streams["history"]
        progress = _Progress(self.logger, f"{entity}/{project}", history)
        for edges in self._pages(entity, project, self._filters(bookmark, unfinished), progress):
            page = []
            for node in (edge.get("node") or {} for edge in edges):
                run_id = node.get("name")
                if not run_id or run_id in seen:
                    continue  # W&B pages may repeat a run while new ones are created
                seen.add(run_id)
                record, raw = self._record(node, entity, project)
                if (
                    record["created_at"] == bookmark_text
                    and run_id in done_at_bookmark
                    and run_id not in unfinished
                ):
                    continue  # finished and fully synced in an earlier sync
                page.append((record, raw))
            if history.selected:
                for record, _ in page:
                    history.prefetch(record, first_history_step(record["run_id"], unfinished))
            for record, raw in page:
                self.current_run = raw
                yield record
                # Resumed once the SDK has emitted the record and synced its children.
                run_id = record["run_id"]
                if record["state"] in TERMINAL_STATES:
                    unfinished.pop(run_id, None)
                else:
                    unfinished[run_id] = self._history_done_through(record, unfinished)
                if newest is None or record["created_at"] > newest:
                    newest, at_newest = record["created_at"], {run_id}
                elif record["created_at"] == newest:
                    at_newest.add(run_id)
                self._save_progress(state, newest, at_newest, unfinished)
                progress.run_done()
        for run_id in [r for r in unfinished if r not in seen]:
            self.logger.info("%s/%s: run %s is gone or filtered out", entity, project, run_id)
            unfinished.pop(run_id)
        self._save_progress(state, newest, at_newest, unfinished)
        progress.finish()
        for child in self.child_streams:
            child.flush_counts()

    def _pages(
        self, entity: str, project: str, filters: dict[str, t.Any], progress: _Progress
    ) -> t.Iterator[list[dict[str, t.Any]]]:
        """The edges of each page of runs, oldest first."""
        after: str | None = None
        while True:
            data = self.wandb.client.graphql(
                queries.RUNS,
                {
                    "entity": entity,
                    "project": project,
                    "filters": dumps_filters(filters),
                    "order": "+created_at",
                    "first": self.config["page_size"],
                    "after": after,
                    "withCount": after is None,
                },
                what=f"runs of {entity}/{project}",
            )
            found = data.get("project")
            if found is None:
                raise WandbResponseError(
                    f"project {entity}/{project} not found on {self.wandb.client.base_url}: check "
                    "the projects and entity settings, and that the API key can see it"
                )
            if after is None:
                progress.start(found.get("runCount"))
            connection = found.get("runs") or {}
            edges = connection.get("edges") or []
            yield edges
            if not (connection.get("pageInfo") or {}).get("hasNextPage") or not edges:
                return
            after = edges[-1].get("cursor")  # as the official client pages runs

    @staticmethod
    def _save_progress(
        state: dict, newest: str | None, at_newest: set[str], unfinished: dict[str, int]
    ) -> None:
        if newest is None:
            return
        state["replication_key"] = "created_at"
        state["replication_key_value"] = newest  # never moves back for a re-read old run
        state["runs_at_bookmark"] = sorted(at_newest)
        state["unfinished_runs"] = dict(sorted(unfinished.items()))

    def _history_done_through(self, record: dict[str, t.Any], unfinished: dict[str, int]) -> int:
        history = self.wandb.streams["history"]
        if history.selected and self.config["history_mode"] == "full":
            return record["history_last_step"]
        return unfinished.get(record["run_id"], -1)

    def _record(
        self, node: dict[str, t.Any], entity: str, project: str
    ) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
        """The run's record, and its raw config and summary for the child streams."""
        run_id = node["name"]
        where = f"run {entity}/{project}/{run_id}"
        raw_config = decode_json_string(
            node.get("config"), what="config", where=where, logger=self.logger
        )
        summary = decode_json_string(
            node.get("summaryMetrics"), what="summaryMetrics", where=where, logger=self.logger
        )
        history_keys = node.get("historyKeys")
        last_step = history_keys.get("lastStep") if isinstance(history_keys, dict) else None
        raw = {"run_id": run_id, "config": raw_config, "summary": summary}
        return {
            "entity": entity,
            "project": project,
            "run_id": run_id,
            "storage_id": node.get("id"),
            "display_name": node.get("displayName"),
            "state": node.get("state"),
            "created_at": rfc3339(node.get("createdAt")),
            "heartbeat_at": rfc3339(node.get("heartbeatAt")),
            "tags": node.get("tags") or [],
            "notes": node.get("notes"),
            "description": node.get("description"),
            "group": node.get("group"),
            "job_type": node.get("jobType"),
            "commit": node.get("commit"),
            "sweep_name": node.get("sweepName"),
            "user": (node.get("user") or {}).get("username"),
            "history_line_count": node.get("historyLineCount"),
            "history_last_step": last_step if isinstance(last_step, int) else -1,
            "config": unwrap_config(raw_config) if raw_config is not None else None,
            "summary": summary,
            "system_metrics": decode_json_string(
                node.get("systemMetrics"), what="systemMetrics", where=where, logger=self.logger
            ),
        }, raw

    def get_child_context(self, record: dict, context: Context | None) -> dict:
        unfinished = self.get_context_state(context).get("unfinished_runs") or {}
        return {
            "entity": record["entity"],
            "project": record["project"],
            "run_id": record["run_id"],
            "first_step": first_history_step(record["run_id"], unfinished),
            "last_step": record["history_last_step"],
        }


def first_history_step(run_id: str, unfinished: dict[str, int]) -> int:
    """Where a run's history continues: after the last step emitted while it was running."""
    return unfinished[run_id] + 1 if run_id in unfinished else 0


class _CountAcrossRuns(metrics.Counter):
    """A child stream's record count over all runs, logged every interval rather than after
    each run (the SDK's default: two METRIC lines per run and child stream)."""

    def with_context(self, value: Context | None) -> None:
        pass

    def __enter__(self) -> _CountAcrossRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ready_to_log():
            self._pop()

    def flush(self) -> None:
        if self.value:
            self._pop()


class _Untimed(metrics.Timer):
    def with_context(self, value: Context | None) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


class RunChildStream(WandbStream):
    """A per-run stream. Child state is kept out of the bookmarks (it would grow with every
    run); the parent's state says which runs to read again."""

    parent_stream_type = RunsStream
    state_partitioning_keys: t.ClassVar[list[str]] = []

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._schema_written = False
        # The SDK announces every per-run sync at INFO: thousands of lines that say nothing.
        self.logger.setLevel(logging.WARNING)

    @override
    def get_record_counter(self, **kwargs: t.Any) -> metrics.Counter:
        if not hasattr(self, "_counter"):
            self._counter = _CountAcrossRuns(
                metrics.Metric.RECORD_COUNT, {metrics.Tag.STREAM: self.name}
            )
        return self._counter

    @override
    def get_sync_timer(self) -> metrics.Timer:
        return _Untimed(metrics.Metric.SYNC_DURATION, {metrics.Tag.STREAM: self.name})

    def flush_counts(self) -> None:
        if hasattr(self, "_counter"):
            self._counter.flush()

    @override
    def _write_schema_message(self) -> None:
        # The SDK writes SCHEMA again for every run; targets need it once per sync.
        if not self._schema_written:
            super()._write_schema_message()
            self._schema_written = True

    def current_run(self, context: Context) -> dict[str, t.Any]:
        current = self.wandb.streams["runs"].current_run
        assert current.get("run_id") == context["run_id"], "child synced out of its run"
        return current

    @staticmethod
    def keyed(context: Context, **fields: t.Any) -> dict[str, t.Any]:
        return {
            "entity": context["entity"],
            "project": context["project"],
            "run_id": context["run_id"],
            **fields,
        }


class ConfigsStream(RunChildStream):
    """One record per top-level config key of each run (internal keys left out)."""

    name = "configs"
    primary_keys = ("entity", "project", "run_id", "key")
    schema = th.PropertiesList(
        *RUN_KEY.wrapped.values(),
        th.Property("key", th.StringType, required=True, description="Top-level config key"),
        th.Property("value", ANY_JSON, description="Unwrapped value, any JSON type"),
        th.Property("desc", th.StringType, description="The key's description, if any"),
    ).to_dict()

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        raw_config = self.current_run(context)["config"]
        for key, value, desc in config_entries(raw_config or {}):
            yield self.keyed(context, key=key, value=value, desc=desc)


class SummariesStream(RunChildStream):
    """One record per summary key of each run."""

    name = "summaries"
    primary_keys = ("entity", "project", "run_id", "key")
    schema = th.PropertiesList(
        *RUN_KEY.wrapped.values(),
        th.Property("key", th.StringType, required=True, description="Summary key"),
        th.Property("value", ANY_JSON, description="Summary value, any JSON type"),
    ).to_dict()

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        for key, value in (self.current_run(context)["summary"] or {}).items():
            yield self.keyed(context, key=key, value=value)  # already finite (decoded)


class HistoryStream(RunChildStream):
    """One record per history row: every row (``full``) or W&B's sample (``sampled``)."""

    name = "history"
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

    @cached_property
    def _direct_write(self) -> bool:
        """Whether records may skip the SDK's per-record path: nothing would change them (no
        stream map or flattening, every property selected, no BATCH, no dry-run limit)."""
        maps = self.stream_maps
        return (
            len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
            and all(self.mask.values())
            and not self.get_batch_config(self.config)
            and self.ABORT_AT_RECORD_COUNT is None
        )

    def _rows(
        self, run: RunRef, first_step: int, last_step: int, stats: HistoryStats
    ) -> t.Iterator[tuple[int, dict[str, t.Any]]]:
        reader = self.wandb.history_reader
        if self.config["history_mode"] == "sampled":
            return reader.sampled(run, self.config["history_samples"], stats)
        return reader.full(run, first_step, last_step, stats)

    def prefetch(self, record: dict[str, t.Any], first_step: int) -> None:
        """Start reading a run's history in the background (runs are taken in this order)."""
        prefetcher = self.wandb.prefetcher
        last_step = record["history_last_step"]
        mode = self.config["history_mode"]
        if prefetcher is None or mode == "off" or (mode == "full" and last_step < first_step):
            return
        run = RunRef(record["entity"], record["project"], record["run_id"])
        stats = HistoryStats()
        self._prefetched_stats[(run, first_step, last_step)] = stats
        prefetcher.submit(
            (run, first_step, last_step), lambda: self._rows(run, first_step, last_step, stats)
        )

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        if self.config["history_mode"] == "off":
            return
        run = RunRef(context["entity"], context["project"], context["run_id"])
        key = (run, context["first_step"], context["last_step"])
        started = time.monotonic()
        prefetched = self.wandb.prefetcher.take(key) if self.wandb.prefetcher else None
        if prefetched is not None:
            rows, stats = prefetched, self._prefetched_stats.pop(key)
        else:
            stats = HistoryStats()
            rows = self._rows(run, context["first_step"], context["last_step"], stats)
        entity, project, run_id = run.entity, run.project, run.run_id
        records = (
            {
                "entity": entity,
                "project": project,
                "run_id": run_id,
                "step": step,
                "metrics": values,
            }
            for step, values in rows
        )
        if self._direct_write:
            # History is most of a sync's volume, and the SDK's per-record path (mapping,
            # child contexts, state) costs more than reading it. These records are already
            # schema-exact and finite, and history has no children or bookmarks of its own.
            write, stamp = self.wandb.message_writer.write_record, utc_now().isoformat()
            written = 0
            for record in records:
                write(self.name, record, stamp)
                written += 1
            self.get_record_counter().increment(written)
        else:
            yield from records
        self.rows_read += stats.rows
        if stats.rows >= 10_000:
            self.wandb.logger.info(
                "history of %s: %d rows (%d parquet files, %d windows) in %.1f s",
                run, stats.rows, stats.parquet_files, stats.windows, time.monotonic() - started,
            )  # fmt: skip
