"""The emulator against its judge, the official client (wandb 0.31.0): listing runs
(filters, order, pages), their fields, and the data advancing.

Expected results are computed here from the store's ``Run`` objects, independently of the
emulator's own filter, order and encoding code.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pytest

from tap_wandb.emulator import DEMO_USER, Run, advance
from tests.conftest import official_client
from tests.emulator_support import assert_same, diff, runs_of

DEMO_TEAM = "acme-research"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# -- listing runs: filters, order, pages ------------------------------------------------------

ListCase = tuple[str, dict | None, str, int, Callable[[Run], bool], Callable[[Run], Any]]
CASES: dict[str, ListCase] = {
    "state": (
        "vision",
        {"state": "finished"},
        "+created_at",
        5,
        lambda r: r.state == "finished",
        lambda r: r.created_at,
    ),
    "created-window-desc": (
        "vision",
        {
            "$and": [
                {"createdAt": {"$gte": "2024-03-01T09:57:56"}},
                {"createdAt": {"$lt": "2024-03-01T11:00:00"}},
            ]
        },
        "-created_at",
        4,
        lambda r: at("2024-03-01T09:57:56") <= r.created_at < at("2024-03-01T11:00:00"),
        lambda r: r.created_at,
    ),
    "or-tags-regex": (
        "nlp",
        {"$or": [{"tags": {"$in": ["prod"]}}, {"displayName": {"$regex": "^calm-"}}]},
        "+created_at",
        3,
        lambda r: "prod" in r.tags or r.display_name.startswith("calm-"),
        lambda r: r.created_at,
    ),
    "nin-ne": (
        "vision",
        {"tags": {"$nin": ["prod", "gpu"]}, "state": {"$ne": "running"}},
        "-created_at",
        7,
        lambda r: not {"prod", "gpu"} & set(r.tags) and r.state != "running",
        lambda r: r.created_at,
    ),
    "config-gt-by-config": (
        "nlp",
        {"config.batch_size": {"$gt": 32}},
        "+config.lr.value",
        3,
        lambda r: r.config["batch_size"]["value"] > 32,
        lambda r: r.config["lr"]["value"],
    ),
    "summary-exists-by-summary": (
        "vision",
        {"summary_metrics.acc": {"$exists": True}},
        "+summary_metrics.acc",
        4,
        lambda r: "acc" in r.summary,
        lambda r: r.summary["acc"],
    ),
    "summary-not-exists": (
        "vision",
        {"summary_metrics.acc": {"$exists": False}},
        "-created_at",
        50,
        lambda r: "acc" not in r.summary,
        lambda r: r.created_at,
    ),
    "created-gt-summary-lt-desc": (
        "nlp",
        {"createdAt": {"$gt": "2024-03-01T10:00:00"}, "summary_metrics.best/acc": {"$lt": 0.5}},
        "-summary_metrics.best/acc",
        2,
        lambda r: r.created_at > at("2024-03-01T10:00:00") and r.summary["best/acc"] < 0.5,
        lambda r: r.summary["best/acc"],
    ),
    "nested-and-dotted-config": (
        "vision",
        {"config.optimizer.name": "adam", "config.model.depth": {"$in": [18, 50]}},
        "-config.epochs.value",
        2,
        lambda r: (
            r.config["optimizer"]["value"]["name"] == "adam"
            and r.config["model.depth"]["value"] in (18, 50)
        ),
        lambda r: r.config["epochs"]["value"],
    ),
    "nested-summary-nor-lte": (
        "nlp",
        {
            "summary_metrics.nested.eval.f1": {"$gte": 0.3},
            "$nor": [{"state": "finished"}],
            "config.epochs": {"$lte": 40},
        },
        "-created_at",
        3,
        lambda r: (
            r.summary["nested"]["eval"]["f1"] >= 0.3
            and r.state != "finished"
            and r.config["epochs"]["value"] <= 40
        ),
        lambda r: r.created_at,
    ),
    "ties-by-config-desc": (
        "vision",
        None,
        "-config.batch_size.value",
        5,
        lambda r: True,
        lambda r: r.config["batch_size"]["value"],
    ),
    "ne-matches-missing": (
        "vision",
        {"config.plain_value": {"$ne": 7}},
        "+created_at",
        6,
        lambda r: r.config.get("plain_value") != 7,
        lambda r: r.created_at,
    ),
    "all-desc": ("nlp", {}, "-created_at", 10, lambda r: True, lambda r: r.created_at),
}


@pytest.mark.parametrize("case", list(CASES))
def test_runs_filters_and_order(client, demo_data, case: str) -> None:
    project, filters, order, per_page, keep, value = CASES[case]
    candidates = runs_of(demo_data, DEMO_USER, project)
    descending = order.startswith("-")
    # Ties break on creation order (reversed with the order), so paging is stable.
    expected = sorted(
        (r for r in candidates if keep(r)), key=lambda r: (value(r), r.seq), reverse=descending
    )
    assert expected, "the case must select something"
    if filters:
        assert len(expected) < len(candidates), "the filter must exclude something"

    runs = client.runs(f"{DEMO_USER}/{project}", filters=filters, order=order, per_page=per_page)
    got = [run.id for run in runs]
    assert got == [r.name for r in expected]
    assert len(runs) == len(expected)  # runCount(filters)


@pytest.mark.parametrize(
    ("operator", "keep"),
    [
        ("$gt", lambda created, t: created > t),
        ("$gte", lambda created, t: created >= t),
        ("$lt", lambda created, t: created < t),
        ("$lte", lambda created, t: created <= t),
    ],
)
def test_created_at_bounds_are_exact(client, demo_data, operator, keep) -> None:
    runs = sorted(runs_of(demo_data, DEMO_USER, "vision"), key=lambda r: (r.created_at, r.seq))
    bound = runs[10].created_at  # a second that three runs share
    filters = {"createdAt": {operator: bound.strftime("%Y-%m-%dT%H:%M:%S")}}
    got = [r.id for r in client.runs(f"{DEMO_USER}/vision", filters=filters, per_page=50)]
    assert got == [r.name for r in runs if keep(r.created_at, bound)]


def test_shared_created_at_across_page_boundary(client, demo_data) -> None:
    ordered = sorted(runs_of(demo_data, DEMO_USER, "vision"), key=lambda r: (r.created_at, r.seq))
    # Precondition: page 1 of 10 ends inside one second that continues on page 2.
    assert ordered[9].created_at == ordered[10].created_at
    for order in ("+created_at", "-created_at"):
        got = [r.id for r in client.runs(f"{DEMO_USER}/vision", order=order, per_page=10)]
        assert sorted(got) == sorted(r.name for r in ordered)
        assert len(got) == len(set(got)) == 24


def test_empty_project_and_team_project(client, demo_data) -> None:
    assert list(client.runs(f"{DEMO_USER}/empty")) == []
    shared = runs_of(demo_data, DEMO_TEAM, "shared")
    assert [r.id for r in client.runs(f"{DEMO_TEAM}/shared")] == [r.name for r in shared]


def test_projects_listing(client, demo_data) -> None:
    for entity in (DEMO_USER, "acme-research"):
        listed = [(p.entity, p.name) for p in client.projects(entity, per_page=2)]
        stored = sorted((e, name) for (e, name) in demo_data.projects if e == entity)
        assert sorted(listed) == stored and len(listed) == len(set(listed))


# -- run fields: config and summary ------------------------------------------------------------


@pytest.mark.parametrize(("entity", "project"), [(DEMO_USER, "vision"), (DEMO_USER, "nlp")])
def test_config_summary_and_fields(client, demo_data, entity: str, project: str) -> None:
    stored = {r.name: r for r in runs_of(demo_data, entity, project)}
    got = {run.id: run for run in client.runs(f"{entity}/{project}", per_page=50, lazy=False)}
    assert got.keys() == stored.keys()
    for name, run in got.items():
        store_run = stored[name]
        expected_config = {
            key: value["value"] if isinstance(value, dict) and "value" in value else value
            for key, value in store_run.config.items()
            if key not in ("_wandb", "wandb_version")
        }
        assert_same(dict(run.config), expected_config)
        assert_same(run.summary._json_dict, store_run.summary)
        assert run.name == store_run.display_name
        assert run.state == store_run.state
        assert run.tags == store_run.tags
        assert run.created_at == store_run.created_at.strftime("%Y-%m-%dT%H:%M:%S")
    # The data is as nasty as promised, so the comparisons above mean something.
    summaries = [r.summary for r in stored.values()]
    configs = [r.config for r in stored.values()]
    assert all(math.isnan(s["nan_metric"]) and s["neg_inf_metric"] == -math.inf for s in summaries)
    assert all(s["huge_int"] > 2**63 for s in summaries)
    assert any("plain_value" in c and not isinstance(c["plain_value"], dict) for c in configs)
    assert all("model.depth" in c and "数据集" in c for c in configs)


def test_single_run_lookup(client, demo_data) -> None:
    store_run = next(r for r in runs_of(demo_data, DEMO_USER, "vision") if "" in r.config)
    run = client.run(f"{DEMO_USER}/vision/{store_run.name}")
    assert run.config[""] == store_run.config[""]["value"]
    assert run.lastHistoryStep == store_run.history[-1]["_step"]


# -- advancing the data ------------------------------------------------------------------------


def test_advance(fresh_emulator) -> None:
    store = fresh_emulator.store
    api = official_client(fresh_emulator.url)
    before, newest = {}, {}
    for key, project in store.projects.items():
        runs = project.runs.values()
        before[key] = {r.name: (r.state, [dict(x) for x in r.history], r.summary) for r in runs}
        newest[key] = max((r.created_at for r in runs), default=None)

    advance(store)

    finished = 0
    for key, project in store.projects.items():
        old = before[key]
        if not old:
            assert not project.runs  # the empty project stays empty
            continue
        added = [r for name, r in project.runs.items() if name not in old]
        assert added, f"{key}: no new runs"
        assert any(r.created_at == newest[key] for r in added), f"{key}: no run in the same second"
        for name, (state, history, summary) in old.items():
            run = project.runs[name]
            assert_same(run.history[: len(history)], history)  # logged rows never change
            if state == "running":
                assert len(run.history) > len(history)
                assert run.history[len(history)]["_step"] > (
                    history[-1]["_step"] if history else -1
                )
                finished += run.state == "finished"
                assert diff(run.summary, summary) is not None
            else:
                assert run.state == state and len(run.history) == len(history)
    assert finished > 0

    # The client sees the new runs, including the one sharing the newest second.
    cutoff = newest[(DEMO_USER, "vision")]
    vision = store.projects[(DEMO_USER, "vision")].runs.values()
    expected = sorted(
        (r for r in vision if r.created_at >= cutoff), key=lambda r: (r.created_at, r.seq)
    )
    assert len(expected) >= 2
    filters = {"createdAt": {"$gte": cutoff.strftime("%Y-%m-%dT%H:%M:%S")}}
    got = [r.id for r in api.runs(f"{DEMO_USER}/vision", filters=filters, per_page=1)]
    assert got == [r.name for r in expected]
