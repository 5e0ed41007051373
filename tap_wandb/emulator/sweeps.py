"""Sweeps: the data class, and how ``project { totalSweeps sweeps sweep }`` serves them.

The fields are the ones the official client (wandb 0.31.0, ``GetSweeps`` and ``GetSweep``)
selects. A sweep's runs are the runs of its project whose ``sweep_name`` is the sweep's name,
which is what the runs filter ``{"sweep": name}`` finds.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

from tap_wandb.emulator.connections import connection
from tap_wandb.emulator.store import (
    FilterError,
    Project,
    Store,
    _field_matches,
    wandb_time,
)

SWEEP_STATES = ("PENDING", "RUNNING", "PAUSED", "CANCELED", "FINISHED")


@dataclass(eq=False)
class Sweep:
    """One W&B sweep, as W&B keeps it."""

    entity: str
    project: str
    # W&B's sweep id (e.g. "k3j2h4g5"): in URLs, in ``sweep(sweepName:)`` and in Run.sweepName.
    name: str
    method: str
    state: str
    # The sweep configuration as YAML text, exactly as it was written (comments and all).
    config: str
    created_at: dt.datetime
    updated_at: dt.datetime | None
    display_name: str | None = None
    description: str | None = None
    # The best value of the sweep's metric; NaN is kept here and served as null, because a
    # GraphQL Float is finite.
    best_loss: float | None = None
    run_count_expected: int | None = None
    internal_id: int = 0


def add_sweep(store: Store, sweep: Sweep) -> Sweep:
    """Add a sweep to its project, giving it the next store-wide internal id."""
    with store.lock:
        if sweep.state not in SWEEP_STATES:
            raise ValueError(f"unknown sweep state {sweep.state!r}")
        project = store.projects[(sweep.entity, sweep.project)]
        sweep.internal_id = 1 + sum(len(p.sweeps) for p in store.projects.values())
        project.sweeps[sweep.name] = sweep
        return sweep


def sweep_runs(project: Project, sweep: Sweep) -> list:
    return [run for run in project.runs.values() if run.sweep_name == sweep.name]


class SweepNode:
    def __init__(self, sweep: Sweep, project: Project) -> None:
        self.sweep = sweep
        self.project = project

    def id(self, info) -> str:
        return base64.b64encode(f"Sweep:{self.sweep.internal_id}".encode()).decode()

    def name(self, info) -> str:
        return self.sweep.name

    def displayName(self, info) -> str | None:
        return self.sweep.display_name

    def method(self, info) -> str:
        return self.sweep.method

    def state(self, info) -> str:
        return self.sweep.state

    def description(self, info) -> str | None:
        return self.sweep.description

    def bestLoss(self, info) -> float | None:
        loss = self.sweep.best_loss
        return loss if loss is not None and math.isfinite(loss) else None

    def config(self, info) -> str:
        return self.sweep.config

    def createdAt(self, info) -> str:
        return wandb_time(self.sweep.created_at)

    def updatedAt(self, info) -> str | None:
        return wandb_time(self.sweep.updated_at) if self.sweep.updated_at else None

    def runCount(self, info) -> int:
        return len(sweep_runs(self.project, self.sweep))

    def runCountExpected(self, info) -> int | None:
        return self.sweep.run_count_expected


_SWEEP_FIELDS = {
    "name": lambda s: s.name,
    "displayName": lambda s: s.display_name,
    "state": lambda s: s.state,
    "method": lambda s: s.method,
    "description": lambda s: s.description,
    "createdAt": lambda s: s.created_at,
    "updatedAt": lambda s: s.updated_at,
}


def sweep_matches(sweep: Sweep, filters: dict[str, Any]) -> bool:
    """Whether a sweep satisfies a MongoDB-style filter over its own fields."""
    for key, condition in filters.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(condition, list):
                raise FilterError(f"{key} needs a list")
            results = [sweep_matches(sweep, part) for part in condition]
            ok = {"$and": all, "$or": any, "$nor": lambda r: not any(r)}[key](results)
        elif key in _SWEEP_FIELDS:
            ok = _field_matches(_SWEEP_FIELDS[key](sweep), condition)
        else:
            raise FilterError(f"unsupported sweep filter field {key!r}")
        if not ok:
            return False
    return True


def _sweep_filters(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError as error:
        raise FilterError(f"filters is not valid JSON: {text!r}") from error
    if not isinstance(value, dict):
        raise FilterError("filters must be a JSON object")
    return value


def ordered_sweeps(project: Project) -> list[Sweep]:
    return sorted(project.sweeps.values(), key=lambda s: (s.created_at, s.internal_id))


def total_sweeps(project: Project) -> int:
    return len(project.sweeps)


def sweeps_page(project: Project, filters: str | None, first: int | None, after: str | None):
    """``project.sweeps(filters, first, after)``: oldest first."""
    wanted = _sweep_filters(filters)
    sweeps = [s for s in ordered_sweeps(project) if sweep_matches(s, wanted)]
    return connection(
        sweeps,
        kind="sweep",
        key=lambda s: s.internal_id,
        node=lambda s: SweepNode(s, project),
        first=first,
        after=after,
    )


def sweep_node(project: Project, name: str) -> SweepNode | None:
    found = project.sweeps.get(name)
    return SweepNode(found, project) if found else None
