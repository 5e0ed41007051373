"""What the emulator tests share: raw GraphQL requests, a JSON diff that names the first
difference, and the runs of the store (the expectations are computed from them)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import requests

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Run


def diff(actual: Any, expected: Any, path: str = "$") -> str | None:
    """The first difference between two JSON-like values (NaN equals NaN; 1 equals 1.0)."""
    nans = [isinstance(value, float) and math.isnan(value) for value in (actual, expected)]
    if all(nans):
        return None
    if isinstance(actual, dict) and isinstance(expected, dict):
        if actual.keys() != expected.keys():
            return f"{path}: keys {sorted(actual.keys() ^ expected.keys())} on one side only"
        for key in actual:
            found = diff(actual[key], expected[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(actual, list | tuple) and isinstance(expected, list | tuple):
        if len(actual) != len(expected):
            return f"{path}: {len(actual)} items, expected {len(expected)}"
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            found = diff(left, right, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(actual, bool) != isinstance(expected, bool) or actual != expected:
        return f"{path}: {actual!r} != {expected!r}"
    return None


def assert_same(actual: Any, expected: Any) -> None:
    found = diff(actual, expected)
    assert found is None, found


def post(
    url: str,
    query: str,
    key: str | None = DEMO_API_KEY,
    user: str = "api",
    operation: str | None = None,
    variables: dict[str, Any] | None = None,
    **kwargs: Any,
) -> requests.Response:
    body: dict[str, Any] = {"query": query, "variables": variables or {}}
    if operation:
        body["operationName"] = operation
    auth = (user, key) if key is not None else None
    return requests.post(f"{url}/graphql", json=body, auth=auth, timeout=30, **kwargs)


def runs_of(store, entity: str, project: str) -> list[Run]:
    return list(store.projects[(entity, project)].runs.values())


def find_run(store, project: str, display_name: str) -> Run:
    (run,) = [r for r in runs_of(store, DEMO_USER, project) if r.display_name == display_name]
    return run


class Clock:
    """The emulator's clock, moved only by the test: each change lands in a later minute."""

    def __init__(self) -> None:
        self.time = dt.datetime(2030, 1, 1, 12, 0, 0)

    def __call__(self) -> dt.datetime:
        return self.time

    def tick(self) -> str:
        """Move on a minute; the new time as W&B writes it."""
        self.time += dt.timedelta(minutes=1)
        return self.time.strftime("%Y-%m-%dT%H:%M:%S")
