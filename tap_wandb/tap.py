"""TapWandb: settings, credential lookup, the project list and the streams."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import netrc
import os
import sys
import typing as t
from decimal import Decimal
from functools import cached_property
from urllib.parse import urlsplit

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import CapabilitiesEnum, TapCapabilities
from typing_extensions import override

from tap_wandb import queries
from tap_wandb.client import WandbAuthError, WandbClient, WandbError
from tap_wandb.history import HistoryReader, Prefetcher
from tap_wandb.output import SingerOutput
from tap_wandb.state import StateError
from tap_wandb.streams import (
    ConfigsStream,
    HistoryStream,
    ProjectsStream,
    RunsStream,
    SummariesStream,
    SweepsStream,
)
from tap_wandb.streams.projects import ProjectListing

HISTORY_MODES = ("full", "sampled", "off")
CHANGE_DETECTION_MODES = ("updated_at", "off")


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
            th.NumberType(minimum=0),
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
        super().__init__(*args, **kwargs)
        problems = settings_problems(self.config)
        if problems:
            raise ConfigValidationError("Invalid tap-wandb settings", errors=problems)

    @override
    def discover_streams(self) -> list[Stream]:
        return [
            RunsStream(self),
            ConfigsStream(self),
            SummariesStream(self),
            HistoryStream(self),
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


def parse_start_date(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def settings_problems(config: t.Mapping[str, t.Any]) -> list[str]:
    """Every setting that would make the sync fail or misbehave, named, before any request."""
    problems = []
    base_url = config.get("base_url") or ""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(
            f"base_url must be an http(s) URL such as https://api.wandb.ai, got {base_url!r}"
        )
    if config.get("start_date"):
        try:
            parse_start_date(str(config["start_date"]))
        except ValueError:
            problems.append(
                f"start_date must be an ISO 8601 date or time such as 2024-01-31 or "
                f"2024-01-31T12:00:00Z, got {config['start_date']!r}"
            )
    filters = config.get("filters")
    if isinstance(filters, str):
        with contextlib.suppress(ValueError):
            filters = json.loads(filters)
    if filters is not None and not isinstance(filters, dict):
        problems.append(
            'filters must be a JSON object such as {"state": "finished"}, '
            f"got {type(filters).__name__} {filters!r:.80}"
        )
    if config.get("change_detection", "updated_at") not in CHANGE_DETECTION_MODES:
        problems.append(
            f"change_detection must be one of {', '.join(CHANGE_DETECTION_MODES)}, "
            f"got {config['change_detection']!r}"
        )
    checks = config.get("deleted_runs_check_hours")
    if checks is not None and (
        isinstance(checks, bool) or not isinstance(checks, int | float | Decimal) or checks < 0
    ):
        problems.append(f"deleted_runs_check_hours must be 0 or more, got {checks!r}")
    if config.get("history_mode", "full") not in HISTORY_MODES:
        problems.append(
            f"history_mode must be one of {', '.join(HISTORY_MODES)}, "
            f"got {config['history_mode']!r}"
        )
    for name in (
        "page_size",
        "history_samples",
        "history_window",
        "history_concurrency",
        "request_timeout",
    ):
        value = config.get(name)
        # The SDK reads fractions from a config file as Decimal.
        number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
        if value is not None and (not number or value <= 0):
            shown = str(value) if isinstance(value, Decimal) else repr(value)
            problems.append(f"{name} must be a positive number, got {shown}")
    max_retries = config.get("max_retries")
    if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
        problems.append(f"max_retries must be 0 or more, got {max_retries!r}")
    for name in ("projects", "history_keys"):
        items = config.get(name)
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, str) and i for i in items)
        ):
            problems.append(f"{name} must be a list of non-empty strings, got {items!r:.80}")
    return problems


def find_api_key(config: t.Mapping[str, t.Any], base_url: str) -> str:
    """The API key: the api_key setting, else WANDB_API_KEY, else ~/.netrc (`wandb login`)."""
    host = urlsplit(base_url).hostname or ""
    found, source, netrc_problem = None, "", ""
    if config.get("api_key"):
        found, source = config["api_key"], "the api_key setting"
    elif os.environ.get("WANDB_API_KEY"):
        found, source = os.environ["WANDB_API_KEY"], "WANDB_API_KEY"
    else:
        try:
            entry = netrc.netrc().authenticators(host)
        except netrc.NetrcParseError as error:
            # Its message may quote the file's tokens; only the permission ones are safe.
            permissions = "permissive" in error.msg or "owner" in error.msg
            netrc_problem = f"; ~/.netrc was not read: {error.msg if permissions else 'bad syntax'}"
            entry = None
        except OSError:
            entry = None
        if entry and entry[2]:
            found, source = entry[2], f"the ~/.netrc entry for {host}"
    if not found:
        raise WandbAuthError(
            f"No W&B API key found for {base_url}: set the api_key setting (TAP_WANDB_API_KEY), "
            f"the WANDB_API_KEY environment variable, or run `wandb login` (a ~/.netrc entry "
            f"for {host}){netrc_problem}."
        )
    key = found.strip()
    if not (key.isascii() and key.isprintable()) or " " in key:
        # Never echo it: say where it came from instead.
        raise WandbAuthError(
            f"The API key in {source} has characters no W&B key has (spaces, quotes or "
            "non-ASCII letters); copy it again from your W&B settings."
        )
    return key


if __name__ == "__main__":
    TapWandb.cli()
