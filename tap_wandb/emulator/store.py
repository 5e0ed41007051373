"""The emulator's data: entities, projects, runs and their history, plus W&B's run filters.

Everything here is plain Python data. The GraphQL layer (``api.py``, ``resolvers.py``,
``run_history.py``) turns it into W&B's wire encodings (JSON strings, naive UTC timestamps,
parquet files).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tap_wandb.emulator.artifacts import Artifact
    from tap_wandb.emulator.sweeps import Sweep

TERMINAL_STATES = frozenset({"finished", "failed", "crashed", "killed"})
WANDB_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def wandb_time(value: dt.datetime) -> str:
    """Format a timestamp as W&B does: naive UTC, second resolution, no offset."""
    return value.strftime(WANDB_TIME_FORMAT)


def parse_filter_time(value: Any) -> dt.datetime | None:
    """Parse a timestamp given in a filter (naive UTC, or ISO 8601 with an offset)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


@dataclass(eq=False)
class Run:
    """One W&B run, held in the shapes a user logs them."""

    entity: str
    project: str
    name: str
    display_name: str
    state: str
    created_at: dt.datetime
    heartbeat_at: dt.datetime
    # When the run last changed (an assumption: the official client never selects updatedAt,
    # see wandb-api.md §14). Unset: its last change in the seeded data, set by Store.add_run.
    updated_at: dt.datetime | None = None
    seq: int = 0
    tags: list[str] = field(default_factory=list)
    group: str | None = None
    job_type: str | None = None
    sweep_name: str | None = None
    commit: str | None = None
    notes: str | None = None
    description: str | None = None
    username: str = "demo-user"
    # The config as W&B stores it: {"key": {"value": ..., "desc": ...}}, internal keys included.
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    system_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # Rows with _step below this are served as parquet exports; the rest are "live".
    exported_before_step: int = 0
    rows_per_parquet_file: int = 20_000
    # Raw wire text that replaces an encoded field or a history row (to serve malformed data).
    raw_fields: dict[str, str] = field(default_factory=dict)
    raw_history_rows: dict[int, str] = field(default_factory=dict)
    # Artifact versions this run logged (outputArtifacts) and used (inputArtifacts), in order.
    logged_artifacts: list[Artifact] = field(default_factory=list)
    used_artifacts: list[Artifact] = field(default_factory=list)

    @property
    def last_step(self) -> int | None:
        return self.history[-1]["_step"] if self.history else None

    @property
    def exported_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.history if row["_step"] < self.exported_before_step]

    @property
    def live_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.history if row["_step"] >= self.exported_before_step]

    def log(self, row: dict[str, Any]) -> None:
        """Append a history row; ``_step`` must increase, as W&B enforces."""
        if self.history and row["_step"] <= self.history[-1]["_step"]:
            raise ValueError(f"run {self.name}: step {row['_step']} does not increase")
        self.history.append(row)


@dataclass(eq=False)
class Project:
    entity: str
    name: str
    internal_id: int
    created_at: dt.datetime
    runs: dict[str, Run] = field(default_factory=dict)
    sweeps: dict[str, Sweep] = field(default_factory=dict)


class Store:
    """Entities, projects and runs, guarded by one lock (the server is threaded)."""

    def __init__(self, api_keys: dict[str, str] | None = None) -> None:
        # api key -> user name; the user's default entity has the same name.
        self.api_keys: dict[str, str] = dict(api_keys or {})
        self.projects: dict[tuple[str, str], Project] = {}
        self.lock = threading.RLock()
        self._next_seq = 1
        self._next_project_id = 1
        # The emulator's clock for updatedAt (naive UTC); tests may replace it.
        self.clock = lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self._not_before = dt.datetime.min  # the clock never runs behind the data
        # How a runs filter on updatedAt is treated: "honour", "reject" or "ignore".
        self.updated_at_filter = "honour"
        # Every artifact version, in creation order (``artifacts.log_artifact`` adds them).
        self.artifacts: list[Artifact] = []

    def add_project(self, entity: str, name: str, created_at: dt.datetime) -> Project:
        with self.lock:
            project = Project(entity, name, self._next_project_id, created_at)
            self._next_project_id += 1
            self.projects[(entity, name)] = project
            return project

    def add_run(self, run: Run) -> Run:
        with self.lock:
            project = self.projects[(run.entity, run.project)]
            run.seq = self._next_seq
            self._next_seq += 1
            if run.updated_at is None:
                run.updated_at = max(run.created_at, run.heartbeat_at)
            self._not_before = max(self._not_before, run.updated_at + dt.timedelta(seconds=1))
            project.runs[run.name] = run
            return run

    def delete_run(self, run: Run) -> None:
        with self.lock:
            del self.projects[(run.entity, run.project)].runs[run.name]

    def now(self) -> dt.datetime:
        """The current time at W&B's second resolution, never earlier than any time in the store.

        Edits within one second share it, as W&B's second-resolution timestamps would.
        """
        with self.lock:
            self._not_before = max(self._not_before, self.clock().replace(microsecond=0))
            return self._not_before

    def touch(self, run: Run) -> None:
        """Record that ``run`` changed now: bumps its ``updated_at``."""
        with self.lock:
            run.updated_at = max(self.now(), run.heartbeat_at, run.created_at)
            self._not_before = run.updated_at

    def project(self, entity: str, name: str) -> Project | None:
        return self.projects.get((entity, name))

    def entity_projects(self, entity: str) -> list[Project]:
        return [p for (e, _), p in sorted(self.projects.items()) if e == entity]

    def all_runs(self) -> list[Run]:
        return [run for project in self.projects.values() for run in project.runs.values()]

    def run(self, entity: str, project: str, name: str) -> Run | None:
        found = self.project(entity, project)
        return found.runs.get(name) if found else None


# ---------------------------------------------------------------------------------------------
# Filters (MongoDB-style, as W&B evaluates them server-side) and order strings.


class FilterError(ValueError):
    """A filter or order W&B would reject."""


_RUN_FIELDS = {
    "name": lambda r: r.name,
    "displayName": lambda r: r.display_name,
    "display_name": lambda r: r.display_name,
    "state": lambda r: r.state,
    "group": lambda r: r.group,
    "jobType": lambda r: r.job_type,
    "job_type": lambda r: r.job_type,
    "sweep": lambda r: r.sweep_name,
    "tags": lambda r: r.tags,
    "username": lambda r: r.username,
    "createdAt": lambda r: r.created_at,
    "created_at": lambda r: r.created_at,
    "heartbeatAt": lambda r: r.heartbeat_at,
    "heartbeat_at": lambda r: r.heartbeat_at,
    "updatedAt": lambda r: r.updated_at,
    "updated_at": lambda r: r.updated_at,
}
_MISSING = object()


def _nested(data: Any, path: str) -> Any:
    """Look up a dotted path; an exact (dotted) key wins over nesting, as W&B keys may hold dots."""
    if not isinstance(data, dict):
        return _MISSING
    if path in data:
        return data[path]
    head, dot, rest = path.partition(".")
    while dot:
        if head in data:
            found = _nested(data[head], rest)
            if found is not _MISSING:
                return found
        more_head, dot, rest = rest.partition(".")
        head = f"{head}.{more_head}"
    return _MISSING


def run_value(run: Run, path: str) -> Any:
    """The value a filter or order path names on a run, or ``_MISSING``."""
    if path in _RUN_FIELDS:
        return _RUN_FIELDS[path](run)
    for prefix in ("config.", "summary_metrics.", "summaryMetrics."):
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if prefix == "config.":
                wrapped = {
                    k: v["value"] if isinstance(v, dict) and "value" in v else v
                    for k, v in run.config.items()
                }
                rest = rest[: -len(".value")] if rest.endswith(".value") else rest
                return _nested(wrapped, rest)
            return _nested(run.summary, rest)
    raise FilterError(f"unsupported filter field {path!r}")


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
    if isinstance(left, dt.datetime):
        right = parse_filter_time(right)
        return (left, right) if right is not None else None
    numeric = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return (left, right) if type(left) is type(right) else None
    if isinstance(left, numeric) and isinstance(right, numeric):
        if isinstance(left, float) and math.isnan(left):
            return None
        return left, right
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    return None


def _equals(value: Any, expected: Any) -> bool:
    if isinstance(value, list) and not isinstance(expected, list):
        return any(_equals(item, expected) for item in value)
    pair = _comparable(value, expected)
    if pair is not None:
        return pair[0] == pair[1]
    return value == expected


def _compare(value: Any, operator: str, operand: Any) -> bool:
    if value is _MISSING or value is None:
        return False
    pair = _comparable(value, operand)
    if pair is None:
        return False
    left, right = pair
    return {
        "$gt": left > right,
        "$gte": left >= right,
        "$lt": left < right,
        "$lte": left <= right,
    }[operator]


def _field_matches(value: Any, condition: Any) -> bool:
    if not (isinstance(condition, dict) and any(k.startswith("$") for k in condition)):
        return value is not _MISSING and _equals(value, condition)
    for operator, operand in condition.items():
        if operator in ("$gt", "$gte", "$lt", "$lte"):
            ok = _compare(value, operator, operand)
        elif operator == "$eq":
            ok = value is not _MISSING and _equals(value, operand)
        elif operator == "$ne":
            ok = value is _MISSING or not _equals(value, operand)
        elif operator in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise FilterError(f"{operator} needs a list")
            found = value is not _MISSING and any(_equals(value, item) for item in operand)
            ok = found if operator == "$in" else not found
        elif operator == "$exists":
            ok = (value is not _MISSING and value is not None) == bool(operand)
        elif operator == "$regex":
            ok = isinstance(value, str) and re.search(operand, value) is not None
        elif operator == "$not":
            ok = not _field_matches(value, operand)
        else:
            raise FilterError(f"unsupported operator {operator!r}")
        if not ok:
            return False
    return True


def matches(run: Run, filters: dict[str, Any]) -> bool:
    """Whether a run satisfies a MongoDB-style W&B filter."""
    if not isinstance(filters, dict):
        raise FilterError("filters must be a JSON object")
    for key, condition in filters.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(condition, list):
                raise FilterError(f"{key} needs a list")
            results = [matches(run, part) for part in condition]
            ok = {"$and": all, "$or": any, "$nor": lambda r: not any(r)}[key](results)
        elif key.startswith("$"):
            raise FilterError(f"unsupported operator {key!r}")
        else:
            ok = _field_matches(run_value(run, key), condition)
        if not ok:
            return False
    return True


def _sort_value(value: Any) -> tuple[int, Any]:
    # Missing and null sort first; then numbers, strings, timestamps; anything else last.
    if value is _MISSING or value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value) if not (isinstance(value, float) and math.isnan(value)) else (0, 0)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, dt.datetime):
        return (3, value.isoformat())
    return (4, json.dumps(value, sort_keys=True, default=str))


def order_key(order: str | None):
    """A sort key for a W&B order string such as ``+created_at`` or ``-summary_metrics.acc``.

    Ties break on creation sequence, so paging is stable.
    """
    order = (order or "+created_at").strip()
    descending = order.startswith("-")
    path = order.lstrip("+-")
    if not path:
        raise FilterError(f"invalid order {order!r}")
    run_value_path = {
        "created_at": "createdAt",
        "heartbeat_at": "heartbeatAt",
        "updated_at": "updatedAt",
    }.get(path, path)

    def key(run: Run) -> tuple:
        return (_sort_value(run_value(run, run_value_path)), run.seq)

    return key, descending


def encode_cursor(sort_key: tuple) -> str:
    return base64.b64encode(json.dumps(sort_key, default=str).encode()).decode()


def decode_cursor(cursor: str) -> tuple:
    try:
        raw = json.loads(base64.b64decode(cursor.encode()))
        (rank, value), seq = raw
        return ((rank, value), seq)
    except (ValueError, TypeError) as error:
        raise FilterError(f"invalid cursor {cursor!r}") from error


def select_runs(
    project: Project,
    filters: dict[str, Any] | None,
    order: str | None,
) -> tuple[list[Run], Any, bool]:
    """Runs of a project that match ``filters``, sorted by ``order``."""
    key, descending = order_key(order)
    runs = [run for run in project.runs.values() if matches(run, filters or {})]
    runs.sort(key=key, reverse=descending)
    return runs, key, descending


def page_after(runs: list[Run], key, descending: bool, after: str | None) -> list[Run]:
    """Keyset pagination: the runs that sort strictly after the cursor."""
    if not after:
        return runs
    cursor = decode_cursor(after)

    def normal(sort_key: tuple) -> tuple:
        # Cursors round-trip through JSON, so compare in JSON-compatible form.
        return json.loads(json.dumps(sort_key, default=str))

    cursor = normal(cursor)
    if descending:
        return [run for run in runs if normal(key(run)) < cursor]
    return [run for run in runs if normal(key(run)) > cursor]
