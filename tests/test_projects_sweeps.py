"""projects and sweeps, record by record, against what the official client (wandb 0.31.0)
reads from the emulator; their requests, counted by the emulator, per stream selection."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

import pytest
import yaml

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER
from tap_wandb.emulator.sweeps import Sweep, add_sweep
from tap_wandb.streams.projects import project_record
from tests.conftest import official_client
from tests.tap_runner import discover, finite, numbers_equal, run_tap, select_streams

RUN_STREAMS = {
    "runs", "configs", "summaries", "history", "artifacts", "run_artifacts", "system_metrics",
}  # fmt: skip
PROJECT_KEY = ("entity", "project")
SWEEP_KEY = ("entity", "project", "sweep_id")
# Requests by the fields they read (see _requests).
PROJECT_LIST = "models"
SWEEPS_PAGE = "project project.sweeps"
PROJECT_LOOKUP = "project"


@pytest.fixture(scope="module")
def default_sync(emulator):
    """One sync of the demo entity with default settings: every stream, full history."""
    emulator.reset_stats()
    run = run_tap({"api_key": DEMO_API_KEY, "base_url": emulator.url})
    return run, _requests(emulator)


@pytest.fixture(scope="module")
def catalog(emulator):
    return discover({"api_key": DEMO_API_KEY, "base_url": emulator.url, "entity": DEMO_USER})


def _requests(emulator) -> Counter[str]:
    """The emulator's requests since its stats were reset, by the fields each read (e.g.
    "models", "project project.sweeps"; "project" alone is a project lookup)."""
    return Counter(" ".join(entry["paths"]) or entry["kind"] for entry in emulator.log)


def _utc(text: str | None) -> str | None:
    """The client's naive-UTC time as RFC 3339 with its offset."""
    if text is None:
        return None
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).isoformat()


def _keyed(records: list[dict], key: tuple[str, ...]) -> dict[tuple, dict]:
    keyed = {tuple(r[k] for k in key): r for r in records}
    assert len(keyed) == len(records), "duplicate keys"
    return keyed


def _client_sweep(sweep, entity: str, project: str) -> dict:
    """A sweep as the client shows it (its GetSweep attributes, its parsed config)."""
    attrs = sweep._attrs
    return {
        "entity": entity,
        "project": project,
        "sweep_id": sweep.id,
        "storage_id": attrs["id"],
        "display_name": attrs["displayName"],
        "method": attrs["method"],
        "state": attrs["state"],
        "description": attrs["description"],
        "best_loss": attrs["bestLoss"],
        "config": finite(sweep.config),
        "config_text": None,
        "created_at": _utc(attrs["createdAt"]),
        "updated_at": _utc(attrs["updatedAt"]),
        "run_count": attrs["runCount"],
        "run_count_expected": sweep.expected_run_count,
    }


# -- the default sync ----------------------------------------------------------------------


def test_streams_synced_after_runs_work(default_sync):
    """runs and its children are synced first (the SDK alone would order streams by name),
    then projects and sweeps: the tap's teardown runs once, after every stream, so streams
    synced after runs and its history readers still read and write."""
    run, _ = default_sync
    order = [m["stream"] for m in run.messages if m["type"] == "RECORD"]
    last_of_runs = max(i for i, stream in enumerate(order) if stream in RUN_STREAMS)
    assert set(order[: last_of_runs + 1]) == RUN_STREAMS
    assert order[last_of_runs + 1 :] == ["projects"] * 3 + ["sweeps"] * 8
    assert "Traceback" not in run.stderr


def test_projects_match_official_client(default_sync, client, demo_data):
    run, _ = default_sync
    got = _keyed(run.records("projects"), PROJECT_KEY)
    want = {
        (p.entity, p.name): {
            "entity": p._attrs["entityName"],
            "project": p.name,
            "storage_id": p.id,
            "created_at": _utc(p.created_at),
            "is_benchmark": p.is_benchmark,
            "user": (p._attrs["user"] or {}).get("username"),
        }
        for p in client.projects(DEMO_USER)
    }
    assert len(want) == len(demo_data.entity_projects(DEMO_USER)) == 3
    assert got == want


def test_sweeps_match_official_client(default_sync, client, demo_data):
    run, _ = default_sync
    got = _keyed(run.records("sweeps"), SWEEP_KEY)
    want = {}
    for project in demo_data.entity_projects(DEMO_USER):
        for sweep in client.project(project.name, DEMO_USER).sweeps():
            want[(DEMO_USER, project.name, sweep.id)] = _client_sweep(
                sweep, DEMO_USER, project.name
            )
    assert len(want) == sum(len(p.sweeps) for p in demo_data.entity_projects(DEMO_USER)) == 8
    assert got.keys() == want.keys()
    for key, record in got.items():
        assert numbers_equal(record, want[key]), key
        # The single-sweep lookup agrees.
        looked_up = client.sweep("/".join(key))
        assert numbers_equal(record, _client_sweep(looked_up, *key[:2])), key


def test_sweep_values_that_bite(default_sync):
    run, _ = default_sync
    sweeps = _keyed(run.records("sweeps"), SWEEP_KEY)
    nan = sweeps[(DEMO_USER, "vision", "swp2")]
    assert nan["best_loss"] is None and nan["run_count"] > 0  # NaN on W&B's side
    bayes = sweeps[(DEMO_USER, "vision", "swp0")]
    # PyYAML (YAML 1.1), as the client: "1e-5" has no dot, so it is a string.
    assert bayes["config"]["parameters"]["lr"]["min"] == "1e-5"
    assert bayes["config"]["parameters"]["lr"]["max"] == 0.01
    unicode = sweeps[(DEMO_USER, "vision", "swp1")]
    assert unicode["display_name"] == "ランダム探索 β 🚀"
    assert unicode["config"]["parameters"]["dropout"]["values"] == [0.0, 0.1, 0.25, None]
    assert any(r["updated_at"] is None for r in sweeps.values())
    assert all(r["created_at"].endswith("+00:00") for r in sweeps.values())


def test_default_sync_requests(default_sync, demo_data):
    """The projects list is read once, for the runs, and the projects stream reuses it;
    sweeps cost one request per project (each has fewer than 50)."""
    _, requests = default_sync
    projects = len(demo_data.entity_projects(DEMO_USER))
    assert requests[PROJECT_LIST] == 1
    assert requests[SWEEPS_PAGE] == projects == 3
    assert requests[PROJECT_LOOKUP] == 0


# -- selection -------------------------------------------------------------------------------


def _sync(emulator, catalog, selected: set[str], **settings) -> tuple:
    emulator.reset_stats()
    config = {"api_key": DEMO_API_KEY, "base_url": emulator.url, "entity": DEMO_USER}
    config.update(history_mode="off", **settings)
    run = run_tap(config, catalog=select_streams(catalog, selected))
    return run, _requests(emulator)


def test_each_stream_alone_and_deselected(emulator, catalog, demo_data):
    projects = len(demo_data.entity_projects(DEMO_USER))
    runs_run, runs_only = _sync(emulator, catalog, RUN_STREAMS)
    assert not runs_run.records("projects") and not runs_run.records("sweeps")
    every_run, every = _sync(emulator, catalog, RUN_STREAMS | {"projects", "sweeps"})
    # projects adds nothing to what the runs cost; sweeps one request per project.
    assert every == runs_only + Counter({SWEEPS_PAGE: projects})
    assert len(every_run.records("projects")) == projects

    alone, requests = _sync(emulator, catalog, {"projects"})
    assert requests == {PROJECT_LIST: 1}
    assert alone.records("projects") == every_run.records("projects")
    assert {m["stream"] for m in alone.messages if m["type"] == "RECORD"} == {"projects"}

    alone, requests = _sync(emulator, catalog, {"sweeps"})
    assert requests == {PROJECT_LIST: 1, SWEEPS_PAGE: projects}
    assert alone.records("sweeps") == every_run.records("sweeps")
    assert {m["stream"] for m in alone.messages if m["type"] == "RECORD"} == {"sweeps"}


def test_configured_projects_list_each_entity_once(emulator, catalog, default_sync):
    """With the projects setting, the projects stream lists each entity named once (its
    other projects are left out) and looks up a project no list shows; sweeps need no list."""
    default_projects = _keyed(default_sync[0].records("projects"), PROJECT_KEY)
    listed = ["vision", f"{DEMO_USER}/nlp", "acme-research/shared", "missing"]
    run, requests = _sync(emulator, catalog, {"projects"}, projects=listed)
    assert requests == {PROJECT_LIST: 2, PROJECT_LOOKUP: 1}
    got = _keyed(run.records("projects"), PROJECT_KEY)
    assert list(got) == [(DEMO_USER, "vision"), (DEMO_USER, "nlp"), ("acme-research", "shared")]
    assert got[(DEMO_USER, "vision")] == default_projects[(DEMO_USER, "vision")]
    assert f"project {DEMO_USER}/missing not found" in run.stderr

    run, requests = _sync(emulator, catalog, {"sweeps"}, projects=listed[:3])
    assert requests == {SWEEPS_PAGE: 3}
    assert {r["project"] for r in run.records("sweeps")} == {"vision", "nlp", "shared"}


def test_project_without_owner():
    node = {"entityName": "team", "name": "p", "id": "UHJvamVjdDox", "createdAt": None}
    assert project_record({**node, "user": None})["user"] is None
    assert project_record(node)["created_at"] is None


# -- YAML configs and paging ---------------------------------------------------------------

ODD_CONFIG = """method: random
metric: {name: loss, goal: minimize}
lr: .nan
limits: [.inf, -.Inf, 1e-5, 1.0e-5]
started: 2024-01-31
2: two
yes: on
"""
ODD_CONFIG_AS_JSON = {
    "method": "random",
    "metric": {"name": "loss", "goal": "minimize"},
    "lr": None,
    "limits": [None, None, "1e-5", 1e-5],
    "started": "2024-01-31",
    "2": "two",
    "true": True,
}
BROKEN_CONFIG = "method: grid\nparameters: {lr: [0.1, 0.2}\n"
LIST_CONFIG = "- method: grid\n- method: random\n"


def _add(store, project: str, name: str, config: str, minutes: int) -> None:
    created = dt.datetime(2024, 3, 2) + dt.timedelta(minutes=minutes)
    add_sweep(store, Sweep(DEMO_USER, project, name, "random", "PENDING", config, created, None))


def test_yaml_configs_the_client_reads_and_ones_it_cannot(fresh_emulator, catalog):
    store = fresh_emulator.store
    for i, (name, config) in enumerate(
        [("oddyaml1", ODD_CONFIG), ("broken01", BROKEN_CONFIG), ("listyaml", LIST_CONFIG)]
    ):
        _add(store, "vision", name, config, i)
    for i in range(110):
        _add(store, "empty", f"page{i:04d}", "method: grid\n", i)
    fresh_emulator.reset_stats()
    config = {"api_key": DEMO_API_KEY, "base_url": fresh_emulator.url, "entity": DEMO_USER}
    config["projects"] = ["vision", "empty"]
    run = run_tap(config, catalog=select_streams(catalog, {"sweeps"}))
    # 4 sweeps of vision in one page, 110 of empty in three pages of 50.
    assert _requests(fresh_emulator) == {SWEEPS_PAGE: 4}
    got = _keyed(run.records("sweeps"), SWEEP_KEY)

    api = official_client(fresh_emulator.url)
    odd = api.sweep(f"{DEMO_USER}/vision/oddyaml1")
    assert math.isnan(odd.config["lr"]) and odd.config["limits"][2] == "1e-5"
    assert odd.config["started"] == dt.date(2024, 1, 31) and odd.config[True] is True
    assert got[(DEMO_USER, "vision", "oddyaml1")]["config"] == ODD_CONFIG_AS_JSON
    assert got[(DEMO_USER, "vision", "oddyaml1")]["config_text"] is None

    for name, problem in [
        ("broken01", "is not valid YAML"),
        ("listyaml", "is a YAML list, not a mapping"),
    ]:
        sweep = api.sweep(f"{DEMO_USER}/vision/{name}")
        record = got[(DEMO_USER, "vision", name)]
        assert record["config"] is None
        assert record["config_text"] == sweep._attrs["config"]
        assert f"sweep {DEMO_USER}/vision/{name}: config {problem}" in run.stderr
    with pytest.raises(yaml.YAMLError):
        _ = api.sweep(f"{DEMO_USER}/vision/broken01").config

    paged = [r["sweep_id"] for r in run.records("sweeps") if r["project"] == "empty"]
    assert paged == [s.id for s in api.project("empty", DEMO_USER).sweeps(per_page=50)]
    assert len(paged) == 110
