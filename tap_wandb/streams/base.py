"""Common ground of the tap's streams: the tap's client and settings, W&B's run key, and the
quirks of per-run child streams."""

from __future__ import annotations

import logging
import time
import typing as t

from singer_sdk import Stream, metrics
from singer_sdk import typing as th
from singer_sdk.helpers.conform import TypeConformanceLevel
from typing_extensions import override

from tap_wandb.streams.sdk_private import SchemaOnce

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
    """A stream of the tap: reads through the tap's client and settings."""

    _tap: TapWandb
    # Records are built schema-exact, JSON-ready and finite, so the SDK's per-value
    # conforming (a third of its cost per record) has nothing to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    @property
    def wandb(self) -> TapWandb:
        return self._tap

    @property
    @override
    def emit_activate_version_messages(self) -> bool:
        # The SDK would send ACTIVATE_VERSION after every child context (every run), and SQL
        # targets would then drop the rows of all the other runs. Versions are not offered.
        return False


class _CountAcrossRuns(metrics.Counter):
    """A child stream's record count over all runs, logged every interval rather than after
    each run (the SDK's default: two METRIC lines per run and child stream)."""

    @override
    def with_context(self, value: Context | None) -> None:
        pass

    @override
    def __enter__(self) -> _CountAcrossRuns:
        return self  # keeps counting from where the last run left off

    @override
    def exit(self) -> None:
        if self.value and self.log_interval < time.time() - self.last_log_time:
            super().exit()

    def flush(self) -> None:
        """Log what is counted since the last log."""
        if self.value:
            super().exit()


class _Untimed(metrics.Timer):
    @override
    def with_context(self, value: Context | None) -> None:
        pass

    @override
    def __exit__(self, *exc: object) -> None:
        pass


class _QuietPerRunStart(logging.Filter):
    """Drops the SDK's "Beginning sync" line for every run (thousands of lines that say
    nothing) unless the tap logs at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and str(record.msg).startswith("Beginning sync of")
            and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        )


class RunChildStream(SchemaOnce, WandbStream):
    """A per-run stream, synced by ``runs`` for each run it emits. Child state is kept out of
    the bookmarks (it would grow with every run): the runs state says which runs to read
    again and where each resumes."""

    state_partitioning_keys: t.ClassVar[list[str]] = []

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger.addFilter(_QuietPerRunStart())

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

    def current_run(self, context: Context) -> dict[str, t.Any]:
        """The raw data of the run being synced (decoded config, summary, …)."""
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
