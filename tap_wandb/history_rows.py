"""History rows in bulk: a page of W&B's row texts -> a batch of rows (parquet exports:
``history_parquet``).

A batch is a list of ``(step, metrics)`` pairs, ``metrics`` as :func:`values.history_metrics`
gives it: the row without ``_step``, non-finite floats as None. History is most of a sync's
volume, so rows are converted a table (or a page) at a time rather than value by value.
"""

from __future__ import annotations

import logging
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
    batch: Batch = []
    for line, metrics in zip(lines, rows, strict=True):
        step = metrics.pop("_step", None)
        if type(step) is not int and (step := step_of(step)) is None:
            logger.warning(_NO_STEP, where, line)
            continue
        batch.append((step, metrics))
    return batch


_NO_STEP = "%s: skipping a history row without an integer _step: %.120s"


def _flat_page(lines: list[Any]) -> list[dict[str, Any]] | None:
    """A page of rows decoded in one call, when every row is a flat JSON object on its own
    line, in ASCII without escapes; else None. Such rows hold nothing to clean or too deep
    (:func:`values.history_metrics` would keep them as they are), but for NaN/Infinity,
    which become null here.

    With exactly one "{" per line, at its start, and no "[" anywhere, rows that decode as
    an array of as many objects as lines are the lines' own objects, one each."""
    if not all(type(line) is str and line.startswith("{") for line in lines):
        return None
    text = ",".join(lines)
    if not text.isascii() or "\\" in text or "[" in text or text.count("{") != len(lines):
        return None
    if "NaN" in text or "Infinity" in text:
        # Without escapes, every other piece between quotes is a string's content: the
        # words may be replaced only if none of those changed.
        nulled = text.replace("-Infinity", "null").replace("Infinity", "null")
        nulled = nulled.replace("NaN", "null")
        if nulled.split('"')[1::2] != text.split('"')[1::2]:
            return None
        text = nulled
    try:
        # Strict: a number beyond a float's range (1e999) fails here, and takes the slow path.
        values = _STRICT.decode("[" + text + "]")
    except msgspec.DecodeError:
        return None
    if len(values) != len(lines) or not all(type(value) is dict for value in values):
        return None
    return values


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
