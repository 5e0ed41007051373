"""Seeded sweeps for the demo dataset: YAML configs as users write them, and their runs.

The demo's runs already name sweeps ``swp0`` to ``swp2`` (Run.sweep_name); every project with
runs gets those three sweeps, so each run's sweep exists, plus a few sweeps without runs.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from tap_wandb.emulator.store import TERMINAL_STATES, Project, Run, Store
from tap_wandb.emulator.sweeps import Sweep, add_sweep, sweep_runs


def _bayes(metric: str, goal: str) -> str:
    # "min: 1e-5" is a float to YAML 1.2 parsers but a string to PyYAML (YAML 1.1), which the
    # official client uses: a real difference between readers of the same config.
    return f"""# Bayesian search over the learning rate and batch size
program: train.py
method: bayes
metric:
  name: {metric}
  goal: {goal}
parameters:
  lr:
    distribution: log_uniform_values
    min: 1e-5
    max: 0.01
  batch_size:
    values: [16, 32, 64, 128]
  optimizer:
    parameters:
      name:
        values: ["adam", "sgd"]
      betas:
        value: [0.9, 0.999]
early_terminate:
  type: hyperband
  min_iter: 3
"""


def _random(metric: str, goal: str) -> str:
    return f"""name: "ランダム探索 β"
description: "Random search — résumé: 学習率と dropout"
method: random
metric:
  name: {metric}
  goal: {goal}
run_cap: 40
parameters:
  lr:
    distribution: uniform
    min: 0.0001
    max: 0.1
  dropout:
    values: [0.0, 0.1, 0.25, null]
  "model.depth":
    values: [18, 34, 50]
command:
  - ${{env}}
  - python
  - ${{program}}
  - ${{args}}
"""


def _grid(metric: str, goal: str) -> str:
    return f"""method: grid
metric:
  name: {metric}
  goal: {goal}
parameters:
  batch_size:
    values: [16, 32, 64, 128]
  epochs:
    values: [5, 10, 20]
  seed:
    value: 42
"""


@dataclass(frozen=True)
class _Spec:
    name: str
    template: Callable[[str, str], str]
    metric: str
    goal: str
    state: str = "RUNNING"  # RUNNING becomes FINISHED once all its runs have ended
    display_name: str | None = None
    description: str | None = None


# method and runCountExpected of each template: the grid's combinations, the random run_cap
_TEMPLATES = {_bayes: ("bayes", None), _random: ("random", 40), _grid: ("grid", 4 * 3)}
_SPECS = {
    "vision": [
        _Spec("swp0", _bayes, "loss", "minimize"),
        _Spec(
            "swp1",
            _random,
            "best/acc",
            "maximize",
            state="CANCELED",
            display_name="ランダム探索 β 🚀",
            description="Random search — résumé: 学習率と dropout\nsecond line, with a tab\there",
        ),
        # Every run's nan_metric is NaN, so the best loss is NaN.
        _Spec("swp2", _grid, "nan_metric", "minimize", display_name="grid / NaN", description=""),
    ],
    "nlp": [
        _Spec("swp0", _bayes, "val/loss", "minimize", display_name="bayes val/loss"),
        _Spec("swp1", _random, "acc", "maximize", state="PAUSED"),
        _Spec("swp2", _grid, "loss", "minimize", description="grid over batch size and epochs"),
    ],
}
_DEFAULT_SPECS = [
    _Spec("swp0", _bayes, "loss", "minimize"),
    _Spec("swp1", _random, "acc", "maximize"),
    _Spec("swp2", _grid, "loss", "minimize"),
]

# Sweeps nobody ran yet, and one whose config has no metric (so no best loss, no best run).
_PENDING_CONFIG = """method: random
metric: {name: val/loss, goal: minimize}
parameters: {lr: {min: 0.0001, max: 0.01}, batch_size: {values: [32, 64]}}
"""
_NO_METRIC_CONFIG = """name: no-metric grid
method: grid
parameters:
  optimizer:
    values:
      - adam
      - sgd
"""


_METRIC = re.compile(r"^metric:\s*\{?\s*name: (?P<name>[^,\n]+)[,\n]\s*goal: (?P<goal>\w+)", re.M)


def best_loss(runs: list[Run], metric: str, goal: str) -> float | None:
    """The best value of the metric in the runs' summaries: NaN if it was only ever NaN."""
    values = [r.summary.get(metric) for r in runs]
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    finite = [v for v in numbers if math.isfinite(v)]
    if finite:
        return float(min(finite) if goal == "minimize" else max(finite))
    return math.nan if numbers else None


def refresh_sweep(project: Project, sweep: Sweep, metric: str | None, goal: str | None) -> None:
    """Keep a sweep's best loss, state and updatedAt in step with its runs."""
    runs = sweep_runs(project, sweep)
    if not runs:
        return
    if metric and goal:
        sweep.best_loss = best_loss(runs, metric, goal)
    if sweep.state in ("RUNNING", "FINISHED"):
        done = all(run.state in TERMINAL_STATES for run in runs)
        sweep.state = "FINISHED" if done else "RUNNING"
    latest = max(run.heartbeat_at for run in runs)
    sweep.updated_at = max(latest, sweep.updated_at or latest)


def _sweep_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def metric_of(config: str) -> tuple[str | None, str | None]:
    """The metric name and goal in one of the configs above (block or flow style)."""
    found = _METRIC.search(config)
    return (found["name"], found["goal"]) if found else (None, None)


def seed_sweeps(store: Store, seed: int) -> None:
    """Sweeps swp0 to swp2 in every project with runs, and two sweeps without runs."""
    rng = random.Random(f"{seed}:sweeps")
    for project in list(store.projects.values()):
        if not project.runs:
            continue
        first_run = min(run.created_at for run in project.runs.values())
        last_run = max(run.created_at for run in project.runs.values())
        for spec in _SPECS.get(project.name, _DEFAULT_SPECS):
            method, expected = _TEMPLATES[spec.template]
            created = first_run - dt.timedelta(minutes=10 + rng.randint(0, 50))
            sweep = Sweep(
                project.entity,
                project.name,
                spec.name,
                method=method,
                state=spec.state,
                config=spec.template(spec.metric, spec.goal),
                created_at=created,
                updated_at=created,
                display_name=spec.display_name,
                description=spec.description,
                run_count_expected=expected,
            )
            add_sweep(store, sweep)
            refresh_sweep(project, sweep, spec.metric, spec.goal)
        created = last_run + dt.timedelta(minutes=rng.randint(1, 30))
        if project.name == "vision":
            extra = ("random", "PENDING", _PENDING_CONFIG, created, None, None)
        elif project.name == "nlp":
            extra = ("grid", "FINISHED", _NO_METRIC_CONFIG, created, created, 2)
        else:
            continue
        method, state, config, created, updated, expected = extra
        add_sweep(
            store,
            Sweep(project.entity, project.name, _sweep_id(rng), method, state, config, created,
                  updated, run_count_expected=expected),
        )  # fmt: skip


def refresh_sweeps(store: Store) -> None:
    """After runs changed: sweeps' best loss, state and updatedAt follow them."""
    for project in store.projects.values():
        for sweep in project.sweeps.values():
            metric, goal = metric_of(sweep.config)
            refresh_sweep(project, sweep, metric, goal)
