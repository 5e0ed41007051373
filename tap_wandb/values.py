"""W&B values -> JSON-ready Python: JSONString decoding, config unwrapping, NaN -> null,
timestamps. Pure functions; nothing here talks to the network."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from decimal import Decimal
from typing import Any

import msgspec
import pendulum

# Keys the W&B client writes into every config for itself; `run.config` leaves them out.
INTERNAL_CONFIG_KEYS = frozenset({"_wandb", "wandb_version"})
TERMINAL_STATES = frozenset({"finished", "failed", "crashed", "killed"})


# Values nested deeper than this become null: a recursive walk (ours, the SDK's, a target's
# JSON parser) would overflow Python's stack on them. W&B data is rarely deeper than ~10.
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


class TooDeepError(ValueError):
    """A value nested deeper than :data:`MAX_DEPTH` levels."""


def clean_text(value: Any) -> Any:
    """A string with lone UTF-16 surrogates (``"\\udcff"`` in W&B's JSON text, e.g. from a
    surrogate-escaped file name) replaced by U+FFFD: UTF-8 output cannot hold them."""
    if not isinstance(value, str) or value.isascii():
        return value
    return _SURROGATE.sub("\ufffd", value)


_DECODER = msgspec.json.Decoder()


def loads(text: str) -> Any:
    """Decode W&B's JSON text: strict JSON the fast way, else (bare NaN/Infinity, numbers
    beyond 64 bits) with Python's lenient decoder, which W&B's own client uses."""
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def finite(value: Any, depth: int = 0) -> Any:
    """Return ``value`` with every NaN/Infinity (float or Decimal) replaced by None.

    Singer output must be strict JSON and most warehouses reject non-finite numbers. Strings
    lose lone surrogates (see :func:`clean_text`). Raises :class:`TooDeepError` for values nested
    more than ``MAX_DEPTH - depth`` levels deep.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise TooDeepError
        return {clean_text(key): finite(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise TooDeepError
        return [finite(item, depth + 1) for item in value]
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    return value


def finite_object(
    value: dict[str, Any], *, what: str, where: str, logger: logging.Logger
) -> dict[str, Any]:
    """:func:`finite` per key of an object; a key whose value is nested too deep becomes null,
    with a warning naming ``where`` (the run) and the key."""
    result = {}
    for key, item in value.items():
        key = clean_text(key)
        try:
            result[key] = finite(item, 1)
        except TooDeepError:
            logger.warning(
                "%s: %s key %r is nested deeper than %d levels; emitting null",
                where, what, key, MAX_DEPTH,
            )  # fmt: skip
            result[key] = None
    return result


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
        return finite_object(text, what=what, where=where, logger=logger)
    if not isinstance(text, str):
        logger.warning(
            "%s: %s is a %s, not a JSON string; emitting null", where, what, type(text).__name__
        )
        return None
    try:
        value = loads(text)
    except (ValueError, RecursionError) as error:
        logger.warning("%s: %s is not valid JSON (%s); emitting null", where, what, error)
        return None
    if not isinstance(value, dict):
        logger.warning(
            "%s: %s is a JSON %s, not an object; emitting null", where, what, type(value).__name__
        )
        return None
    return finite_object(value, what=what, where=where, logger=logger)


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


def history_metrics(
    row: dict[str, Any],
    keys: frozenset[str] | None = None,
    *,
    where: str = "history row",
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Everything in a history row except ``_step``, finite, optionally only ``keys``.

    A value nested too deep becomes null, with a warning naming ``where`` (the run) and the key.
    """
    try:
        return {
            key if key.isascii() else clean_text(key): finite(value, 1)
            for key, value in row.items()
            if key != "_step" and (keys is None or key in keys)
        }
    except TooDeepError:
        metrics = {k: v for k, v in row.items() if k != "_step" and (keys is None or k in keys)}
        logger = logger or logging.getLogger("tap-wandb")
        return finite_object(metrics, what="history", where=where, logger=logger)
