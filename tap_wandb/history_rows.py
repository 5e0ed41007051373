"""History rows in bulk: a page of W&B's row texts -> a batch of rows (parquet exports:
``history_parquet``).

A batch is a list of ``(step, metrics)`` pairs, ``metrics`` as :func:`values.history_metrics`
gives it: the row without ``_step``, non-finite floats as None. History is most of a sync's
volume, so rows are converted a table (or a page) at a time rather than value by value.
"""

from __future__ import annotations

import json
import logging
import math
import typing as t
from typing import Any

import msgspec

from tap_wandb.values import history_metrics, loads, step_of

Batch = list[tuple[int, dict[str, Any]]]
# Strict JSON only: it rejects NaN, Infinity and numbers beyond a float's range.
_STRICT = msgspec.json.Decoder()


def text_batch(
    lines: list[Any] | None,
    keys: frozenset[str] | None,
    *,
    where: str,
    logger: logging.Logger,
) -> Batch:
    """W&B's history rows (JSON texts, or objects) as a batch; bad rows are logged, skipped."""
    lines = lines or []
    rows = _flat_page(lines) if keys is None else None
    if rows is None:
        return [row for line in lines if (row := _text_row(line, keys, where, logger))]
    # Flat ASCII rows hold nothing to clean or too deep; only NaN/Infinity need finite().
    maybe_non_finite = not rows.strict
    batch: Batch = []
    for line, metrics in zip(lines, rows.values, strict=True):
        step = metrics.pop("_step", None)
        if type(step) is not int and (step := step_of(step)) is None:
            logger.warning(_NO_STEP, where, line)
            continue
        if maybe_non_finite and ("NaN" in line or "Infinity" in line or _overflows(metrics)):
            metrics = history_metrics(metrics, where=where, logger=logger)
        batch.append((step, metrics))
    return batch


_NO_STEP = "%s: skipping a history row without an integer _step: %.120s"


def _overflows(metrics: dict[str, Any]) -> bool:
    """Whether a number was beyond a float's range (1e999), which json.loads makes Infinity."""
    values = metrics.values()
    return math.inf in values or -math.inf in values


class _Page(t.NamedTuple):
    values: list[dict[str, Any]]
    strict: bool  # decoded as strict JSON, so no value is NaN/Infinity


def _flat_page(lines: list[Any]) -> _Page | None:
    """A page of rows decoded in one call, when every row is a flat JSON object on its own
    line, in ASCII without escapes (so no key or string needs cleaning); else None.

    With exactly one "{" per line, at its start, and no "[" anywhere, rows that decode as
    an array of as many objects as lines are the lines' own objects, one each."""
    if not all(type(line) is str and line.startswith("{") for line in lines):
        return None
    text = ",".join(lines)
    if not text.isascii() or "\\" in text or "[" in text or text.count("{") != len(lines):
        return None
    strict = "NaN" not in text and "Infinity" not in text
    try:
        page = "[" + text + "]"
        values = _STRICT.decode(page) if strict else json.loads(page)
    except (ValueError, RecursionError):
        return None
    if len(values) != len(lines) or not all(type(value) is dict for value in values):
        return None
    return _Page(values, strict)


def _text_row(
    line: Any, keys: frozenset[str] | None, where: str, logger: logging.Logger
) -> tuple[int, dict[str, Any]] | None:
    """One row of any shape, as :func:`values.history_metrics` has it; None: skipped."""
    try:
        row = loads(line) if isinstance(line, str) else line
    except (ValueError, RecursionError) as error:
        logger.warning("%s: skipping a history row that is not JSON (%s)", where, error)
        return None
    step = step_of(row.get("_step")) if isinstance(row, dict) else None
    if step is None:
        logger.warning(_NO_STEP, where, line)
        return None
    metrics = history_metrics(row, keys, where=where, logger=logger)
    if keys is not None and not metrics:
        return None
    return step, metrics
