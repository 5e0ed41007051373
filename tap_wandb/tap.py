"""TapWandb: settings, credential lookup, the project list and the streams."""

from __future__ import annotations

import datetime as dt
import json
import sys
import typing as t
from functools import cached_property

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, TapCapabilities
from typing_extensions import override

from tap_wandb import queries
from tap_wandb.client import WandbAuthError, WandbClient, WandbError
from tap_wandb.history import HistoryReader, Prefetcher
from tap_wandb.output import SingerOutput
from tap_wandb.settings import (
    CHANGE_DETECTION_MODES,
    HISTORY_MODES,
    find_api_key,
    given_settings,
    parse_start_date,
    settings_problems,
)
from tap_wandb.state import StateError
from tap_wandb.streams import (
    ArtifactsStream,
    ConfigsStream,
    HistoryStream,
    ProjectsStream,
    RunArtifactsStream,
    RunsStream,
    SummariesStream,
    SweepsStream,
    SystemMetricsStream,
)
from tap_wandb.streams.projects import ProjectListing


class TapWandb(Tap):
    """Singer tap for Weights & Biases runs, configs, summaries and metric history."""

    name = "tap-wandb"
    message_writer_class = SingerOutput
    message_writer: SingerOutput
    # Not activate-version: the SDK would send ACTIVATE_VERSION per run for the child
    # streams, and targets would drop every other run's rows (see WandbStream).
    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [
        capability
        for capability in Tap.capabilities
        if capability is not TapCapabilities.ACTIVATE_VERSION
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            secret=True,
            description="W&B API key. If unset: WANDB_API_KEY, then the ~/.netrc entry that "
            "`wandb login` writes for the base URL's host.",
        ),
        th.Property(
            "base_url",
            th.StringType,
            default="https://api.wandb.ai",
            description="W&B API base URL; self-hosted and dedicated servers use their own.",
        ),
        th.Property(
            "entity",
            th.StringType,
            description="W&B entity (user or team). Default: the API key's default entity.",
        ),
        th.Property(
            "projects",
            th.ArrayType(th.StringType),
            description="Projects to sync, as `project` or `entity/project`. "
            "Empty or unset: every project of the entity.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Runs created before this time (UTC if no offset) are not synced.",
        ),
        th.Property(
            "filters",
            th.CustomType({"type": ["object", "string", "null"]}),
            description="W&B MongoDB-style run filter (an object, or its JSON text), e.g. "
            '{"state": "finished"}; applied by W&B and combined with the tap\'s own '
            "incremental filter.",
        ),
        th.Property(
            "history_mode",
            th.StringType,
            default="full",
            allowed_values=list(HISTORY_MODES),
            description="`full`: every history row, unsampled (parquet exports + live tail); "
            "`sampled`: W&B's sample of `history_samples` points per run; `off`: no history.",
        ),
        th.Property(
            "history_samples",
            th.IntegerType(minimum=1),
            default=500,
            description="Points per run in `sampled` history mode.",
        ),
        th.Property(
            "history_keys",
            th.ArrayType(th.StringType),
            description="Only these metrics are extracted into history (the step always is). "
            "Rows holding none of them are left out.",
        ),
        th.Property(
            "system_metrics_samples",
            th.IntegerType(minimum=1),
            default=500,
            description="System-metrics rows per run: W&B's sample of that many points, read "
            'once the run has ended (as the client\'s `run.history(stream="system")`).',
        ),
        th.Property(
            "change_detection",
            th.StringType,
            default="updated_at",
            allowed_values=list(CHANGE_DETECTION_MODES),
            description="`updated_at`: each sync also re-reads finished runs W&B changed since "
            "the last one (edits, resumes); `off`: only new and unfinished runs, for servers "
            "without Run.updatedAt.",
        ),
        th.Property(
            "deleted_runs_check_hours",
            th.IntegerType(minimum=0),
            default=24,
            description="Hours between checks for runs deleted in W&B (one request per 500 "
            "runs); each deleted run gets a `runs` record with `_sdc_deleted_at` set. "
            "0: every sync.",
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1),
            default=100,
            description="Runs per request.",
        ),
        th.Property(
            "history_window",
            th.IntegerType(minimum=1),
            default=1000,
            description="Steps per request when paging live (not yet exported) history.",
        ),
        th.Property(
            "history_concurrency",
            th.IntegerType(minimum=1),
            default=4,
            description="Runs whose history is read at once, ahead of the run being written "
            "(1: one run at a time). A 429 pauses them all.",
        ),
        th.Property(
            "request_timeout",
            th.NumberType(exclusive_minimum=0),
            default=60,
            description="Seconds to wait for one HTTP response.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0),
            default=8,
            description="Retries of a failing request (429, 5xx, timeouts, dropped "
            "connections) before the sync fails.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        # A bad setting gets its one-line message before the SDK's schema check would word it
        # (settings given as a dict or JSON files); settings from the environment after it.
        _refuse_bad_settings(given_settings(kwargs.get("config"), self.config_jsonschema))
        super().__init__(*args, **kwargs)
        _refuse_bad_settings(self.config)

    @override
    def discover_streams(self) -> list[Stream]:
        return [
            RunsStream(self),
            ConfigsStream(self),
            SummariesStream(self),
            HistoryStream(self),
            ArtifactsStream(self),
            RunArtifactsStream(self),
            SystemMetricsStream(self),
            ProjectsStream(self),
            SweepsStream(self),
        ]

    @property
    @override
    def streams(self) -> dict[str, Stream]:
        """The streams in the order they are synced: runs (with its children) first, then the
        others by name. (The SDK orders them all by name, which would put projects first.) So
        a bad key, project or server fails on the runs' first request, and the streams listed
        whole each sync come after the runs."""
        by_name = super().streams
        return dict(sorted(by_name.items(), key=lambda item: item[0] != "runs"))

    @override
    def sync_all(self) -> None:
        try:
            super().sync_all()
        except (WandbError, StateError) as error:
            # One clear line instead of a traceback; STATE already emitted stays valid.
            self.logger.error("tap-wandb failed: %s", error)
            sys.exit(1)
        finally:
            self.finish_sync()

    @override
    def run_sync_dry_run(self, *args: t.Any, **kwargs: t.Any) -> bool:
        """The SDK's test runner syncs through here, not sync_all: the same teardown, so that
        what it reads is every message (and nothing is left to print at exit)."""
        try:
            return super().run_sync_dry_run(*args, **kwargs)
        finally:
            self.finish_sync()

    def finish_sync(self) -> None:
        """Once every stream is done (or the sync failed): write out what is queued, records
        extracted before a failure included, and stop the history readers."""
        self.message_writer.flush()
        if self.__dict__.get("prefetcher") is not None:  # only if it was started
            self.client.close()  # history readers still retrying give up now
            self.prefetcher.close()

    @cached_property
    def start_date(self) -> dt.datetime | None:
        value = self.config.get("start_date")
        return parse_start_date(value) if value else None

    @cached_property
    def run_filters(self) -> dict[str, t.Any]:
        """The user's run filter (Meltano may hand an object setting over as JSON text)."""
        filters = self.config.get("filters") or {}
        return json.loads(filters) if isinstance(filters, str) else dict(filters)

    @cached_property
    def client(self) -> WandbClient:
        base_url = self.config["base_url"].rstrip("/")
        return WandbClient(
            base_url,
            find_api_key(self.config, base_url),
            timeout=float(self.config["request_timeout"]),
            max_retries=self.config["max_retries"],
            logger=self.logger,
        )

    @cached_property
    def history_reader(self) -> HistoryReader:
        keys = self.config.get("history_keys")
        return HistoryReader(
            self.client,
            window=self.config["history_window"],
            keys=frozenset(keys) if keys else None,
            logger=self.logger,
        )

    @cached_property
    def prefetcher(self) -> Prefetcher | None:
        workers = self.config["history_concurrency"]
        # History readers hand over batches of rows (about 1,000 each); the defaults queue one
        # batch per chunk, four chunks per run.
        return Prefetcher(workers) if workers > 1 else None

    @cached_property
    def entity(self) -> str:
        if self.config.get("entity"):
            return self.config["entity"]
        viewer = self.client.graphql(queries.VIEWER, {}, what="the API key's default entity")
        entity = (viewer.get("viewer") or {}).get("entity")
        if not entity:
            raise WandbAuthError(
                f"W&B at {self.client.base_url} knows no user for this API key; check the key"
            )
        return entity

    @cached_property
    def project_paths(self) -> list[tuple[str, str]]:
        """(entity, project) pairs to sync, from the projects setting or the entity's list."""
        listed = self.config.get("projects") or []
        if listed:
            paths = []
            for item in listed:
                entity, _, project = item.rpartition("/")
                paths.append((entity or self.entity, project))
            return list(dict.fromkeys(paths))
        paths = [(node["entityName"], node["name"]) for node in self.project_listing(self.entity)]
        if paths:
            self.logger.info("entity %s: %d projects to sync", self.entity, len(paths))
        else:
            self.logger.warning(
                "entity %s: no projects this API key can see; check the entity setting",
                self.entity,
            )
        return paths

    @cached_property
    def project_listing(self) -> ProjectListing:
        """Each entity's projects as W&B lists them, read once per sync."""
        return ProjectListing(self.client, details=self.streams["projects"].selected)


def _refuse_bad_settings(config: t.Mapping[str, t.Any]) -> None:
    problems = settings_problems(config)
    if problems:
        raise ConfigValidationError("Invalid tap-wandb settings", errors=problems)


if __name__ == "__main__":
    TapWandb.cli()
