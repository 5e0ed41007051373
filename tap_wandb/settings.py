"""tap-wandb's settings: their allowed values, the checks run before any request, and where
the API key comes from."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import netrc
import os
import typing as t
from decimal import Decimal
from pathlib import Path, PurePath
from urllib.parse import urlsplit

from tap_wandb.client import WandbAuthError

HISTORY_MODES = ("full", "sampled", "off")
CHANGE_DETECTION_MODES = ("updated_at", "off")

POSITIVE_NUMBERS = (
    "page_size",
    "history_samples",
    "system_metrics_samples",
    "history_window",
    "history_concurrency",
    "request_timeout",
)
AT_LEAST_ZERO = ("max_retries", "deleted_runs_check_hours")


def parse_start_date(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def given_settings(config: t.Any, schema: dict[str, t.Any]) -> dict[str, t.Any]:
    """The settings as given to the tap (a dict, or JSON files as the SDK reads them), over
    their defaults, before the SDK's own schema check."""
    given: dict[str, t.Any] = {
        name: spec["default"] for name, spec in schema["properties"].items() if "default" in spec
    }
    files = [config] if isinstance(config, str | PurePath) else config
    if isinstance(files, list):
        for path in files:
            with contextlib.suppress(OSError, ValueError):
                given.update(json.loads(Path(path).read_text()))
    elif isinstance(config, dict):
        given.update(config)
    return given


def settings_problems(config: t.Mapping[str, t.Any]) -> list[str]:
    """Every setting that would make the sync fail or misbehave, named, before any request."""
    return [
        *_address_and_time_problems(config),
        *_choice_problems(config),
        *_number_problems(config),
        *_list_problems(config),
    ]


def _address_and_time_problems(config: t.Mapping[str, t.Any]) -> t.Iterator[str]:
    base_url = config.get("base_url") or ""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        yield f"base_url must be an http(s) URL such as https://api.wandb.ai, got {base_url!r}"
    if config.get("start_date"):
        try:
            parse_start_date(str(config["start_date"]))
        except ValueError:
            yield (
                f"start_date must be an ISO 8601 date or time such as 2024-01-31 or "
                f"2024-01-31T12:00:00Z, got {config['start_date']!r}"
            )


def _choice_problems(config: t.Mapping[str, t.Any]) -> t.Iterator[str]:
    filters = config.get("filters")
    if isinstance(filters, str):
        with contextlib.suppress(ValueError):
            filters = json.loads(filters)
    if filters is not None and not isinstance(filters, dict):
        yield (
            'filters must be a JSON object such as {"state": "finished"}, '
            f"got {type(filters).__name__} {filters!r:.80}"
        )
    for name, default, choices in (
        ("change_detection", "updated_at", CHANGE_DETECTION_MODES),
        ("history_mode", "full", HISTORY_MODES),
    ):
        if config.get(name, default) not in choices:
            yield f"{name} must be one of {', '.join(choices)}, got {config[name]!r}"


def _number_problems(config: t.Mapping[str, t.Any]) -> t.Iterator[str]:
    for name in POSITIVE_NUMBERS + AT_LEAST_ZERO:
        value = config.get(name)
        if value is None:
            continue
        # The SDK reads fractions from a config file as Decimal.
        number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
        if name == "max_retries":
            number = number and isinstance(value, int)
        shown = str(value) if isinstance(value, Decimal) else repr(value)
        if name in POSITIVE_NUMBERS and (not number or value <= 0):
            yield f"{name} must be a positive number, got {shown}"
        elif name in AT_LEAST_ZERO and (not number or value < 0):
            yield f"{name} must be 0 or more, got {shown}"


def _list_problems(config: t.Mapping[str, t.Any]) -> t.Iterator[str]:
    for name in ("projects", "history_keys"):
        items = config.get(name)
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, str) and i for i in items)
        ):
            yield f"{name} must be a list of non-empty strings, got {items!r:.80}"


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
