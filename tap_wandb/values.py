"""W&B values -> JSON-ready Python: JSONString decoding, config unwrapping, NaN -> null,
timestamps. Pure functions; nothing here talks to the network."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from decimal import Decimal
from typing import Any

import pendulum

# Keys the W&B client writes into every config for itself; `run.config` leaves them out.
INTERNAL_CONFIG_KEYS = frozenset({"_wandb", "wandb_version"})
TERMINAL_STATES = frozenset({"finished", "failed", "crashed", "killed"})


def finite(value: Any) -> Any:
    """Return ``value`` with every NaN/Infinity (float or Decimal) replaced by None.

    Singer output must be strict JSON and most warehouses reject non-finite numbers.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return value


def decode_json_string(
    text: str | None, *, what: str, where: str, logger: logging.Logger
) -> dict[str, Any] | None:
    """Decode a W&B JSONString field (which may hold bare NaN/Infinity) into a finite object.

    Malformed text is logged with ``where`` (the run) and ``what`` (the field) and gives None,
    so one bad run never stops a sync.
    """
    if text is None:
        return None
    if isinstance(text, dict):
        return finite(text)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        logger.warning("%s: %s is not valid JSON (%s); emitting null", where, what, error)
        return None
    if not isinstance(value, dict):
        logger.warning(
            "%s: %s is a JSON %s, not an object; emitting null", where, what, type(value).__name__
        )
        return None
    return finite(value)


def config_entries(raw_config: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
    """(key, value, desc) per user config key, unwrapped from ``{"value": ..., "desc": ...}``.

    Mirrors the official client's ``run.config``: values not wrapped that way stay as they are,
    and the internal keys are left out.
    """
    entries = []
    for key, item in raw_config.items():
        if key in INTERNAL_CONFIG_KEYS:
            continue
        if isinstance(item, dict) and "value" in item:
            desc = item.get("desc")
            entries.append((key, item["value"], desc if isinstance(desc, str) else None))
        else:
            entries.append((key, item, None))
    return entries


def unwrap_config(raw_config: dict[str, Any]) -> dict[str, Any]:
    """The config as the official client's ``run.config`` shows it."""
    return {key: value for key, value, _ in config_entries(raw_config)}


def rfc3339(value: str | None) -> str | None:
    """W&B's naive UTC timestamps (``2024-01-01T12:00:00``) as RFC 3339 in UTC.

    One output format for every input, so bookmarks compare correctly as strings.
    """
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = pendulum.parse(value, tz="UTC")  # lenient fallback for unusual formats
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC).isoformat(timespec="seconds")


def wandb_filter_time(value: dt.datetime) -> str:
    """A timestamp in the naive-UTC form W&B's own ``createdAt`` values have."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def step_of(value: Any) -> int | None:
    """``_step`` as an int; W&B sometimes sends it as a float such as ``8.0``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def history_metrics(row: dict[str, Any], keys: frozenset[str] | None = None) -> dict[str, Any]:
    """Everything in a history row except ``_step``, finite, optionally only ``keys``."""
    return {
        key: finite(value)
        for key, value in row.items()
        if key != "_step" and (keys is None or key in keys)
    }
