"""runs and the streams that cost no requests of their own: configs and summaries.

``runs`` is the parent: one page of runs per request, config and summary included (and, for
the streams that need them, each run's artifacts and system metrics; see run_documents). Its
children read what they need from the run being processed; ``history`` (its own module)
reads the run's metric history.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import typing as t

from singer_sdk import typing as th
from typing_extensions import override

from tap_wandb.client import WandbGraphQLError, WandbResponseError, dumps_filters
from tap_wandb.state import Need, RunsState, user_run_filter
from tap_wandb.streams.base import ANY_JSON, BLOB, RUN_KEY, RunChildStream, WandbStream
from tap_wandb.streams.run_documents import (
    ARTIFACTS_PAGE_SIZE,
    RUN_CHILD_FIELDS,
    RUN_IDS,
    RUN_IDS_PAGE_SIZE,
    RUNS,
    RUNS_WITHOUT_UPDATED_AT,
)
from tap_wandb.values import config_entries, decode_json_string, rfc3339, unwrap_config

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

    from tap_wandb.streams.history import HistoryStream

# The fields of a run that move when it logs history.
HISTORY_FIELDS = ("heartbeatAt", "historyLineCount", "historyKeys")


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
        th.Property(
            "updated_at", th.DateTimeType, description="When W&B last changed the run, UTC"
        ),
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
        th.Property(
            "_sdc_deleted_at",
            th.DateTimeType,
            description="Set when the run was deleted in W&B (a tombstone: key fields only)",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # The run being processed: its raw config and summary, and its children's context.
        self.current_run: dict[str, t.Any] = {}
        self._child_context: dict[str, t.Any] = {}
        self._warned_unfiltered = False

    @property
    def partitions(self) -> list[dict[str, str]]:
        return [{"entity": e, "project": p} for e, p in self.wandb.project_paths]

    @property
    def finds_changes(self) -> bool:
        return self.config["change_detection"] == "updated_at"

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        entity, project = context["entity"], context["project"]
        started = time.monotonic()
        state = RunsState(self.get_context_state(context))
        history: HistoryStream = self.wandb.streams["history"]
        progress = _Progress(self.logger, f"{entity}/{project}", history)
        filters = state.server_filter(
            self.wandb.run_filters, self.wandb.start_date, changes=self.finds_changes
        )
        seen: set[str] = set()
        for edges in self._pages(entity, project, filters, progress):
            page = list(self._needing_sync(edges, entity, project, state, seen))
            if history.selected:
                for *_, child_context in page:
                    history.prefetch(child_context)
            for record, raw, need, child_context in page:
                self.current_run, self._child_context = raw, child_context
                yield record  # the SDK syncs the run's children before this returns
                through = record["history_last_step"] if history.reads_all_rows else None
                state.run_synced(record, need, through)
                state.save()
                progress.run_done()
        gone = sorted(run_id for run_id in state.unfinished if run_id not in seen)
        for run_id in gone:
            self.logger.info("%s/%s: run %s is gone or filtered out", entity, project, run_id)
        state.forget(gone)
        yield from self._tombstones(entity, project, state)
        state.sync_done(dt.timedelta(seconds=time.monotonic() - started))
        state.save()
        progress.finish()
        for child in self.child_streams:
            child.flush_counts()
        # Out with each project, not only at the end of sync_all: the SDK's dry runs (its
        # standard tests, --test) sync streams without it.
        self.wandb.message_writer.flush()

    def _needing_sync(
        self, edges: list[dict], entity: str, project: str, state: RunsState, seen: set[str]
    ) -> t.Iterator[tuple[dict[str, t.Any], dict[str, t.Any], Need, dict[str, t.Any]]]:
        """(record, raw data, need, child context) of each listed run that needs a sync."""
        unfiltered = 0
        for node in (edge.get("node") or {} for edge in edges):
            run_id = node.get("name")
            if not run_id or run_id in seen:
                continue  # W&B pages may repeat a run while new ones are created
            seen.add(run_id)
            record, raw = self._record(node, entity, project)
            need = state.need(record, fingerprint(node), changes=self.finds_changes)
            if need is not Need.NOTHING:
                yield record, raw, need, state.child_context(record, need)
            elif self.finds_changes and state.listed_before_changes(record):
                unfiltered += 1
        if unfiltered and not self._warned_unfiltered:
            self._warned_unfiltered = True
            self.logger.warning(
                "%s/%s: W&B listed %d unchanged runs that its updatedAt filter should have left "
                "out: it seems to ignore the filter, so every sync lists every run (changes are "
                "still found, at the cost of one request per %d runs)",
                entity, project, unfiltered, self.config["page_size"],
            )  # fmt: skip

    def _tombstones(
        self, entity: str, project: str, state: RunsState
    ) -> t.Iterator[dict[str, t.Any]]:
        """A tombstone record for each synced run W&B deleted, when a check is due."""
        now = dt.datetime.now(dt.UTC)
        every = dt.timedelta(hours=float(self.config["deleted_runs_check_hours"]))
        if not state.deletions_due(now, every):
            return
        present = set(self._run_ids(entity, project))
        gone, told_apart = state.deleted(present, now)
        if not told_apart:
            self.logger.info(
                "%s/%s: deleted runs not identified this time (first check, or more changes "
                "than the state's sketch holds); checking from now on", entity, project,
            )  # fmt: skip
        for run_id in sorted(gone):
            self.logger.info("%s/%s: run %s was deleted in W&B", entity, project, run_id)
            yield {"entity": entity, "project": project, "run_id": run_id,
                   "_sdc_deleted_at": now.isoformat(timespec="seconds")}  # fmt: skip

    def _run_ids(self, entity: str, project: str) -> t.Iterator[str]:
        filters = user_run_filter(self.wandb.run_filters, self.wandb.start_date)
        for data in self.wandb.client.pages(
            RUN_IDS,
            {
                "entity": entity,
                "project": project,
                "filters": dumps_filters(filters),
                "first": RUN_IDS_PAGE_SIZE,
            },
            connection=lambda data: (data.get("project") or {}).get("runs"),
            what=f"run ids of {entity}/{project}",
            cursor="edge",
        ):
            for edge in ((data.get("project") or {}).get("runs") or {}).get("edges") or []:
                yield (edge.get("node") or {})["name"]

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
            **self._child_variables(),
        }
        pages = self.wandb.client.pages(
            RUNS if self.finds_changes else RUNS_WITHOUT_UPDATED_AT,
            variables,
            connection=lambda data: (data.get("project") or {}).get("runs"),
            what=f"runs of {entity}/{project}",
            cursor="edge",  # as the official client pages runs
            first_page={"withCount": True},
        )
        for data in _explaining_updated_at(pages, self.wandb.client.base_url):
            found = data.get("project")
            if found is None:
                raise WandbResponseError(
                    f"project {entity}/{project} not found on {self.wandb.client.base_url}: check "
                    "the projects and entity settings, and that the API key can see it"
                )
            if "runCount" in found:
                progress.start(found["runCount"])
            yield (found.get("runs") or {}).get("edges") or []

    def _child_variables(self) -> dict[str, t.Any]:
        """What the runs pages carry for the child streams selected (nothing for the rest)."""
        streams = self.wandb.streams
        return {
            "withArtifacts": streams["artifacts"].selected or streams["run_artifacts"].selected,
            "artifactsFirst": ARTIFACTS_PAGE_SIZE,
            "withSystemMetrics": streams["system_metrics"].selected,
            "systemMetricsSamples": self.config["system_metrics_samples"],
        }

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
        raw.update((field, node[field]) for field in RUN_CHILD_FIELDS if field in node)
        return {
            "entity": entity,
            "project": project,
            "run_id": run_id,
            "storage_id": node.get("id"),
            "display_name": node.get("displayName"),
            "state": node.get("state"),
            "created_at": rfc3339(node.get("createdAt")),
            "heartbeat_at": rfc3339(node.get("heartbeatAt")),
            "updated_at": rfc3339(node.get("updatedAt")),
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
    def generate_child_contexts(
        self, record: dict, context: Context | None
    ) -> t.Iterable[dict | None]:
        if record.get("_sdc_deleted_at") is None:  # a tombstone has no children to sync
            yield self._child_context


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


def fingerprint(node: dict[str, t.Any]) -> str:
    """A short digest of what W&B said of a run (its updatedAt, system-metrics sample and
    the details of its artifact versions left out): equal fingerprints, nothing of the run to
    sync again. The second half sums up its history alone, so that a resumed run is told from
    an edited one."""
    history = {key: node.get(key) for key in HISTORY_FIELDS}
    left_out = {*HISTORY_FIELDS, *RUN_CHILD_FIELDS, "updatedAt"}
    rest = {key: value for key, value in node.items() if key not in left_out}
    # Its lineage is part of the run (a version it logged or used since is a change); what
    # W&B says of the versions themselves, and the system-metrics sample, are not.
    for field in ("outputArtifacts", "inputArtifacts"):
        if field in node:
            edges = (node[field] or {}).get("edges") or []
            rest[field] = [(edge.get("node") or {}).get("id") for edge in edges]
    return _digest(rest) + _digest(history)


def _digest(value: dict[str, t.Any]) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _explaining_updated_at(
    pages: t.Iterator[dict[str, t.Any]], base_url: str
) -> t.Iterator[dict[str, t.Any]]:
    """The pages, with a W&B refusal of ``updatedAt`` (field or filter) explained."""
    try:
        yield from pages
    except WandbGraphQLError as error:
        if not any("updatedat" in message.lower() for message in error.messages):
            raise
        raise WandbGraphQLError(
            f"{error} -- W&B at {base_url} does not accept the updatedAt run field or filter "
            "that finds runs changed since the last sync; set change_detection to off to sync "
            "without it (edits to finished runs are then not picked up)",
            error.messages,
        ) from None
