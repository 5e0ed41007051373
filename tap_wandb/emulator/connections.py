"""Relay connections over lists already in order: opaque cursors naming the last item seen."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

from tap_wandb.emulator.store import FilterError


def cursor_for(kind: str, key: int) -> str:
    return base64.b64encode(f"{kind}:{key}".encode()).decode()


def _cursor_key(kind: str, cursor: str) -> int:
    try:
        found_kind, key = base64.b64decode(cursor.encode(), validate=True).decode().split(":")
        if found_kind != kind:
            raise ValueError(found_kind)
        return int(key)
    except ValueError as error:
        raise FilterError(f"invalid cursor {cursor!r}") from error


def connection(
    items: Sequence[Any],
    *,
    kind: str,
    key: Callable[[Any], int],
    node: Callable[[Any], Any],
    first: int | None,
    after: str | None,
) -> dict[str, Any]:
    """One page of ``items``: those after the item the cursor names, at most ``first`` of them.

    A cursor names an item by its key, not its position, so items added while a client pages
    do not shift later pages.
    """
    first = 50 if first is None else first
    if first < 0:
        raise FilterError("first must not be negative")
    start = 0
    if after:
        wanted = _cursor_key(kind, after)
        positions = [i for i, item in enumerate(items) if key(item) == wanted]
        if not positions:
            raise FilterError(f"cursor {after!r} names nothing here")
        start = positions[0] + 1
    page = items[start : start + first]
    cursors = [cursor_for(kind, key(item)) for item in page]
    return {
        "totalCount": len(items),
        "edges": [{"node": node(item)} for item in page],
        "pageInfo": {
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
            "hasNextPage": start + first < len(items),
            "hasPreviousPage": start > 0,
        },
    }
