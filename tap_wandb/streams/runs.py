"""runs and the streams that cost no requests of their own: configs and summaries.

``runs`` is the parent: one page of runs per request, config and summary included. Its
children read what they need from the run being processed; ``history`` (its own module)
reads the run's metric history.
"""

from __future__ import annotations

import logging
import time
import typing as t
from textwrap import dedent

from singer_sdk import typing as th
from typing_extensions import override

from tap_wandb.client import WandbResponseError, dumps_filters
from tap_wandb.state import RunsState
from tap_wandb.streams.base import ANY_JSON, BLOB, RUN_KEY, RunChildStream, WandbStream
from tap_wandb.values import config_entries, decode_json_string, rfc3339, unwrap_config

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

    from tap_wandb.streams.history import HistoryStream

# One page of runs with config, summary and history bounds, so no request per run is needed.
# runCount is asked for on the first page only (for progress logs).
RUNS = dedent("""
    query Runs(
      $entity: String!
      $project: String!
      $filters: JSONString
      $order: String
      $first: Int
      $after: String
      $withCount: Boolean!
    ) {
      project(name: $project, entityName: $entity) {
        runCount(filters: $filters) @include(if: $withCount)
        runs(filters: $filters, order: $order, first: $first, after: $after) {
          edges {
            cursor
            node {
              id
              name
              displayName
              state
              createdAt
              heartbeatAt
              tags
              group
              jobType
              sweepName
              commit
              notes
              description
              historyLineCount
              user {
                username
              }
              config
              summaryMetrics
              systemMetrics
              historyKeys
            }
          }
          pageInfo {
            endCursor
            hasNextPage
          }
        }
      }
    }
""")


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

    Each project is a state partition owned by :class:`RunsState` (new runs since the
    bookmark, unfinished runs read again until they end). The stream has no SDK replication
    key: the SDK would write the bookmark from every record too, including re-read older
    runs, and there must be one writer.
    """

    name = "runs"
    primary_keys = ("entity", "project", "run_id")
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
        th.Property(
            "history_last_step", th.IntegerType, description="Highest _step logged (null: none)"
        ),
        th.Property("config", BLOB, description="Config, unwrapped as the client's run.config"),
        th.Property("summary", BLOB, description="Summary metrics (client's run.summary)"),
        th.Property("system_metrics", BLOB, description="Latest system metrics"),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # The run being processed: its raw config and summary, and its children's context.
        self.current_run: dict[str, t.Any] = {}
        self._child_context: dict[str, t.Any] = {}

    @property
    def partitions(self) -> list[dict[str, str]]:
        return [{"entity": e, "project": p} for e, p in self.wandb.project_paths]

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        entity, project = context["entity"], context["project"]
        state = RunsState(self.get_context_state(context))
        history: HistoryStream = self.wandb.streams["history"]
        progress = _Progress(self.logger, f"{entity}/{project}", history)
        filters = state.server_filter(self.wandb.run_filters, self.wandb.start_date)
        seen: set[str] = set()
        for edges in self._pages(entity, project, filters, progress):
            page = list(self._unsynced(edges, entity, project, state, seen))
            if history.selected:
                for _, _, child_context in page:
                    history.prefetch(child_context)
            for record, raw, child_context in page:
                self.current_run, self._child_context = raw, child_context
                yield record  # the SDK syncs the run's children before this returns
                through = record["history_last_step"] if history.reads_all_rows else None
                state.run_synced(record, through)
                state.save()
                progress.run_done()
        gone = sorted(run_id for run_id in state.unfinished if run_id not in seen)
        for run_id in gone:
            self.logger.info("%s/%s: run %s is gone or filtered out", entity, project, run_id)
        state.forget(gone)
        state.save()
        progress.finish()
        for child in self.child_streams:
            child.flush_counts()

    def _unsynced(
        self, edges: list[dict], entity: str, project: str, state: RunsState, seen: set[str]
    ) -> t.Iterator[tuple[dict[str, t.Any], dict[str, t.Any], dict[str, t.Any]]]:
        """(record, raw data, child context) of each listed run not yet synced."""
        for node in (edge.get("node") or {} for edge in edges):
            run_id = node.get("name")
            if not run_id or run_id in seen:
                continue  # W&B pages may repeat a run while new ones are created
            seen.add(run_id)
            record, raw = self._record(node, entity, project)
            if not state.already_synced(run_id, record["created_at"]):
                yield record, raw, state.child_context(record)

    def _pages(
        self, entity: str, project: str, filters: dict[str, t.Any], progress: _Progress
    ) -> t.Iterator[list[dict[str, t.Any]]]:
        """The edges of each page of runs, oldest first."""
        variables = {
            "entity": entity,
            "project": project,
            "filters": dumps_filters(filters),
            "order": "+created_at",
            "first": self.config["page_size"],
            "withCount": False,
        }
        for data in self.wandb.client.pages(
            RUNS,
            variables,
            connection=lambda data: (data.get("project") or {}).get("runs"),
            what=f"runs of {entity}/{project}",
            cursor="edge",  # as the official client pages runs
            first_page={"withCount": True},
        ):
            found = data.get("project")
            if found is None:
                raise WandbResponseError(
                    f"project {entity}/{project} not found on {self.wandb.client.base_url}: check "
                    "the projects and entity settings, and that the API key can see it"
                )
            if "runCount" in found:
                progress.start(found["runCount"])
            yield (found.get("runs") or {}).get("edges") or []

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
            "history_last_step": last_step if isinstance(last_step, int) else None,
            "config": unwrap_config(raw_config) if raw_config is not None else None,
            "summary": summary,
            "system_metrics": decode_json_string(
                node.get("systemMetrics"), what="systemMetrics", where=where, logger=self.logger
            ),
        }, raw

    @override
    def get_child_context(self, record: dict, context: Context | None) -> dict:
        return self._child_context


class ConfigsStream(RunChildStream):
    """One record per top-level config key of each run (internal keys left out)."""

    name = "configs"
    parent_stream_type = RunsStream
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
    parent_stream_type = RunsStream
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
