"""The emulator against its judge, the official client (wandb 0.31.0), and against raw HTTP.

Expected results are computed here from the store's ``Run`` objects, independently of the
emulator's own filter, order and encoding code.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
import wandb

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, Fault, FaultPlan, Run, advance
from tests.conftest import official_client

DEMO_TEAM = "acme-research"
VIEWER = "query Viewer { viewer { id username entity } }"
RUNS = (
    '{ project(name: "vision", entityName: "acme") { runs(first: 2) { edges { node { name } } } } }'
)
PARQUET_HISTORY = (
    'query P($name: String!) { project(name: "nlp", entityName: "acme") { run(name: $name) '
    '{ parquetHistory(liveKeys: ["_step"]) { parquetUrls liveData } } } }'
)

# -- helpers -----------------------------------------------------------------------------------


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


def without_none(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value is not None}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


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


@pytest.fixture(scope="module")
def client(emulator: Emulator):
    return official_client(emulator.url)


@pytest.fixture(scope="module")
def normal_run(demo_data) -> Run:
    """The vision run with the longest history: NaN, gaps, sparse keys and media in it."""
    run = max(runs_of(demo_data, DEMO_USER, "vision"), key=lambda r: len(r.history))
    values = [value for row in run.history for value in row.values()]
    steps = [row["_step"] for row in run.history]
    assert any(isinstance(v, float) and math.isnan(v) for v in values)
    assert any(isinstance(v, dict) for v in values)
    assert steps[-1] + 1 > len(steps)  # gaps in _step
    assert run.exported_before_step == 0
    return run


@pytest.fixture(scope="module")
def empty_run(demo_data) -> Run:
    return next(r for r in runs_of(demo_data, DEMO_USER, "vision") if not r.history)


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


# -- history -----------------------------------------------------------------------------------


def test_sampled_history(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    by_step = {row["_step"]: row for row in normal_run.history}
    rows = run.history(samples=25, pandas=False)
    steps = [row["_step"] for row in rows]
    assert len(rows) == 25
    assert steps == sorted(set(steps))
    for row in rows:
        assert_same(row, by_step[row["_step"]])
    everything = run.history(samples=len(normal_run.history) + 10, pandas=False)
    assert_same(everything, normal_run.history)


def test_history_by_keys(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    rows = run.history(keys=["acc", "lr"], pandas=False)
    expected = [
        {"_step": r["_step"], "acc": r["acc"], "lr": r["lr"]}
        for r in normal_run.history
        if "acc" in r and "lr" in r
    ]
    assert 0 < len(expected) < len(normal_run.history)
    assert_same(rows, expected)
    # sampledHistory is plain JSON: a NaN comes back as null.
    rows = run.history(keys=["loss"], pandas=False)
    expected = [
        {"_step": r["_step"], "loss": None if math.isnan(r["loss"]) else r["loss"]}
        for r in normal_run.history
    ]
    assert any(row["loss"] is None for row in expected)
    assert_same(rows, expected)


def test_system_metrics_stream(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    assert normal_run.events
    assert_same(run.history(stream="system", pandas=False), normal_run.events)


def test_scan_history_normal_run(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    assert_same(list(run.scan_history()), normal_run.history)
    keyed = list(run.scan_history(keys=["acc"]))
    assert_same(
        keyed, [{"_step": r["_step"], "acc": r["acc"]} for r in normal_run.history if "acc" in r]
    )
    window = list(run.scan_history(min_step=10, max_step=60, page_size=7))
    assert_same(window, [r for r in normal_run.history if 10 <= r["_step"] < 60])


def test_run_without_history(client, empty_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{empty_run.name}")
    assert list(run.scan_history()) == []
    assert run.history(pandas=False) == []
    assert run.history(keys=["acc"], pandas=False) == []
    assert run.history(stream="system", pandas=False) == []


@pytest.fixture(scope="module")
def big_scan(client, emulator, demo_data):
    """One full scan of the 50,000-step run (parquet exports plus a live tail)."""
    run = find_run(demo_data, "nlp", "long-pretraining")
    before = emulator.stats()
    rows = list(client.run(f"{DEMO_USER}/nlp/{run.name}").scan_history(use_cache=False))
    after = emulator.stats()
    fields = {key: after["fields"][key] - before["fields"].get(key, 0) for key in after["fields"]}
    return run, rows, fields


def test_scan_history_big_run_every_step_once(big_scan) -> None:
    run, rows, fields = big_scan
    exported = [r for r in run.history if r["_step"] < run.exported_before_step]
    assert len(run.history) >= 50_000
    assert exported and len(exported) < len(run.history)  # both exports and a live tail
    steps = [int(row["_step"]) for row in rows]
    assert len(steps) == len(set(steps)) == len(run.history)
    assert sorted(steps) == [r["_step"] for r in run.history]
    assert fields["parquet"] >= math.ceil(len(exported) / run.rows_per_parquet_file)
    assert fields["project.run.history"] >= 1  # the live tail came through history windows


def test_scan_history_big_run_values(big_scan) -> None:
    run, rows, _ = big_scan
    by_step = {int(row["_step"]): row for row in rows}
    for expected in run.history:
        got = without_none(by_step[expected["_step"]])
        found = diff(got, without_none(expected), f"step {expected['_step']}")
        assert found is None, found


# -- validation, authentication, strict JSON --------------------------------------------------


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("{ viewer { id inventedField } }", "inventedField"),
        (
            '{ project(name: "vision", entityName: "acme") { runs(first: 1, since: "x") '
            "{ edges { node { name } } } } }",
            "since",
        ),
        (
            '{ project(name: "vision", entityName: "acme") { run(name: "x") { host } } }',
            "host",
        ),
        ("{ viewer { id ", "Syntax Error"),
    ],
)
def test_unknown_field_is_a_graphql_error(emulator, query: str, needle: str) -> None:
    response = post(emulator.url, query)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert any(needle in error["message"] for error in body["errors"]), body


@pytest.mark.parametrize(
    ("key", "user"), [("x" * 40, "api"), (DEMO_API_KEY, "someone"), (None, "api")]
)
def test_wrong_key_gets_401(emulator, key, user) -> None:
    response = post(emulator.url, VIEWER, key=key, user=user)
    assert response.status_code == 401
    errors = response.json()["errors"]
    assert errors and all(isinstance(error["message"], str) for error in errors)


def test_client_with_wrong_key_raises(emulator) -> None:
    with pytest.raises(wandb.errors.CommError):
        wandb.Api(
            api_key="y" * 40, overrides={"base_url": emulator.url, "entity": DEMO_USER}, timeout=10
        )


def test_viewer_and_strict_outer_json(emulator, normal_run) -> None:
    assert post(emulator.url, VIEWER).json()["data"]["viewer"]["username"] == DEMO_USER
    spec = json.dumps(json.dumps({"keys": ["loss"]}))
    query = (
        f'{{ project(name: "vision", entityName: "acme") {{ run(name: "{normal_run.name}") '
        f"{{ summaryMetrics history(samples: 1000) sampledHistory(specs: [{spec}]) }} }} }}"
    )

    def refuse(token: str):
        raise AssertionError(f"bare {token} in the outer JSON")

    body = json.loads(post(emulator.url, query).text, parse_constant=refuse)
    run = body["data"]["project"]["run"]
    assert math.isnan(json.loads(run["summaryMetrics"])["nan_metric"])  # bare NaN inside strings
    assert_same([json.loads(row) for row in run["history"]], normal_run.history)


# -- faults and accounting ---------------------------------------------------------------------


def statuses(url: str, count: int, query: str = VIEWER) -> list[int]:
    return [post(url, query).status_code for _ in range(count)]


def test_429_with_retry_after(fresh_emulator) -> None:
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=1, retry_after=2.5, max_faults=1))
    response = post(fresh_emulator.url, VIEWER)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2.5"
    assert response.json()["errors"]
    assert post(fresh_emulator.url, VIEWER).status_code == 200
    plan = FaultPlan(rate_limit_every=1, retry_after=None, rate_limit_reset=3, max_faults=1)
    fresh_emulator.set_faults(plan)
    response = post(fresh_emulator.url, VIEWER)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.headers["RateLimit-Reset"] == "3"


def test_periodic_429_and_max_faults(fresh_emulator) -> None:
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=3))
    assert statuses(fresh_emulator.url, 9) == [200, 200, 429] * 3
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=1, max_faults=2))
    assert statuses(fresh_emulator.url, 5) == [429, 429, 200, 200, 200]


def test_error_rate_is_seeded_and_counted(fresh_emulator) -> None:
    plan = FaultPlan(error_rate=0.3, seed=5)
    fresh_emulator.set_faults(plan)
    fresh_emulator.reset_stats()
    first = statuses(fresh_emulator.url, 40)
    failures = first.count(502)
    assert 0 < failures < 40 and set(first) == {200, 502}
    stats = fresh_emulator.stats()
    assert stats["statuses"] == {"200": 40 - failures, "502": failures}
    assert stats["faults"] == {"status": failures}
    fresh_emulator.set_faults(plan)
    assert statuses(fresh_emulator.url, 40) == first  # same seed, same faults
    fresh_emulator.set_faults(FaultPlan(error_rate=0.3, seed=6))
    assert statuses(fresh_emulator.url, 40) != first


def test_scripted_fault_matches_paths(fresh_emulator) -> None:
    fault = Fault("status", match="project.runs", status=503, after=1, times=2)
    fresh_emulator.set_faults(FaultPlan(script=[fault]))
    assert statuses(fresh_emulator.url, 2) == [200, 200]  # viewer does not match
    assert statuses(fresh_emulator.url, 4, RUNS) == [200, 503, 503, 200]


def test_drop_closes_the_connection(fresh_emulator) -> None:
    fresh_emulator.set_faults(FaultPlan(script=[Fault("drop")]))
    with pytest.raises(requests.ConnectionError):
        post(fresh_emulator.url, VIEWER)
    assert post(fresh_emulator.url, VIEWER).status_code == 200
    fresh_emulator.set_faults(FaultPlan(drop_rate=1.0, max_faults=1))
    with pytest.raises(requests.ConnectionError):
        post(fresh_emulator.url, VIEWER)
    assert fresh_emulator.stats()["faults"] == {"drop": 2}


def test_a_client_hanging_up_is_not_an_error(demo_data, capfd) -> None:
    body = json.dumps({"query": VIEWER}).encode()
    key = base64.b64encode(f"api:{DEMO_API_KEY}".encode()).decode()
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: emulator\r\nAuthorization: Basic {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    threads_before = set(threading.enumerate())
    with Emulator(demo_data) as emulator:
        emulator.set_faults(FaultPlan(script=[Fault("delay", match="viewer", seconds=0.5)]))
        with socket.create_connection(emulator.httpd.server_address[:2]) as client:
            client.sendall(request)
            deadline = time.monotonic() + 30
            while not emulator.arrivals:  # the emulator is holding its answer back
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # Hang up with a reset, as a killed client does, before the answer goes out.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handlers = [
            thread
            for thread in set(threading.enumerate()) - threads_before
            if "process_request_thread" in thread.name
        ]
        assert handlers
        for thread in handlers:  # answering into the reset connection
            thread.join(30)
    assert "Traceback" not in capfd.readouterr().err


def test_truncate_html_graphql_error_delay(fresh_emulator) -> None:
    url = fresh_emulator.url
    fresh_emulator.set_faults(
        FaultPlan(
            script=[
                Fault("truncate", match="project.runs"),
                Fault("html", match="viewer"),
                Fault("graphql_error", match="viewer", body="boom"),
                Fault("delay", match="viewer", seconds=0.4),
            ]
        )
    )
    truncated = post(url, RUNS)
    complete = post(url, RUNS)
    assert truncated.status_code == complete.status_code == 200
    assert complete.json()["data"]["project"]["runs"]["edges"]
    assert 0 < len(truncated.content) < len(complete.content)
    assert complete.content.startswith(truncated.content)
    with pytest.raises(ValueError):
        truncated.json()

    html = post(url, VIEWER)
    assert html.status_code == 200
    assert html.headers["Content-Type"].startswith("text/html") and html.text.startswith("<html")
    assert post(url, VIEWER).json() == {"errors": [{"message": "boom"}], "data": None}
    started = time.monotonic()
    delayed = post(url, VIEWER)
    assert time.monotonic() - started >= 0.4
    assert delayed.json()["data"]["viewer"]["username"] == DEMO_USER


def test_official_client_rides_out_rate_limits(fresh_emulator, demo_data) -> None:
    api = official_client(fresh_emulator.url)
    fresh_emulator.reset_stats()
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=2, retry_after=0, max_faults=3))
    got = [run.id for run in api.runs(f"{DEMO_USER}/vision", per_page=5)]
    assert got == [r.name for r in runs_of(demo_data, DEMO_USER, "vision")]
    assert fresh_emulator.stats()["statuses"]["429"] == 3
    fresh_emulator.set_faults(FaultPlan(script=[Fault("graphql_error", body="no such luck")]))
    with pytest.raises(Exception, match="no such luck"):
        list(api.runs(f"{DEMO_USER}/nlp"))


def test_stats_count_requests_fields_and_bytes(fresh_emulator) -> None:
    url, plain = fresh_emulator.url, {"Accept-Encoding": "identity"}
    fresh_emulator.reset_stats()
    responses = [
        post(url, VIEWER, operation="Viewer", headers=plain),
        post(url, VIEWER, key="z" * 40, operation="Viewer", headers=plain),
        post(url, RUNS, headers=plain),
    ]
    assert [r.status_code for r in responses] == [200, 401, 200]
    stats = fresh_emulator.stats()
    assert stats["requests"] == {"Viewer": 2, "project": 1}
    assert stats["fields"] == {"viewer": 2, "project": 1, "project.runs": 1}
    assert stats["statuses"] == {"200": 2, "401": 1}
    assert stats["total"] == 3
    assert stats["bytes_served"] == sum(len(r.content) for r in responses)


def test_control_endpoints(fresh_emulator) -> None:
    url = fresh_emulator.url
    control = f"{url}/_emulator"
    post(url, VIEWER)
    assert requests.get(f"{control}/stats", timeout=10).json() == fresh_emulator.stats()
    assert fresh_emulator.stats()["total"] == 1  # control traffic is not W&B traffic

    plan = {"rate_limit_every": 1, "retry_after": 0, "max_faults": 1}
    assert requests.post(f"{control}/faults", json=plan, timeout=10).status_code == 200
    assert requests.get(f"{control}/faults", timeout=10).json()["rate_limit_every"] == 1
    response = post(url, VIEWER)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "0")
    assert post(url, VIEWER).status_code == 200

    assert requests.post(f"{control}/stats/reset", timeout=10).status_code == 200
    assert fresh_emulator.stats()["total"] == 0

    before = len(fresh_emulator.store.all_runs())
    assert requests.post(f"{control}/advance", json={"seed": 3}, timeout=10).status_code == 200
    assert len(fresh_emulator.store.all_runs()) > before

    assert requests.post(f"{control}/faults", json={"bogus": 1}, timeout=10).status_code == 400
    assert requests.post(f"{control}/faults", data=b"{", timeout=10).status_code == 400
    assert requests.get(f"{control}/nothing", timeout=10).status_code == 404


# -- parquet downloads -------------------------------------------------------------------------


def test_parquet_history_downloads(emulator, demo_data) -> None:
    run = find_run(demo_data, "nlp", "long-pretraining")
    exported = [r for r in run.history if r["_step"] < run.exported_before_step]
    history = post(emulator.url, PARQUET_HISTORY, variables={"name": run.name}).json()["data"][
        "project"
    ]["run"]["parquetHistory"]
    live = [{"_step": r["_step"]} for r in run.history if r["_step"] >= run.exported_before_step]
    assert history["liveData"] == live
    urls = history["parquetUrls"]
    assert len(urls) == math.ceil(len(exported) / run.rows_per_parquet_file)
    assert all(u.startswith(emulator.url + "/") for u in urls)

    whole = requests.get(urls[0], timeout=30)  # signed URL: no Authorization needed
    assert whole.status_code == 200
    data = whole.content
    table = pq.read_table(io.BytesIO(data))
    steps = [r["_step"] for r in exported[: run.rows_per_parquet_file]]
    assert table.column("_step").to_pylist() == steps

    size = len(data)
    for header, status, body, content_range in [
        ("bytes=0-0", 206, data[:1], f"bytes 0-0/{size}"),
        ("bytes=-8", 206, data[-8:], f"bytes {size - 8}-{size - 1}/{size}"),
        ("bytes=4-19", 206, data[4:20], f"bytes 4-19/{size}"),
        ("bytes=100-", 206, data[100:], f"bytes 100-{size - 1}/{size}"),
        (f"bytes={size}-", 416, None, f"bytes */{size}"),
    ]:
        response = requests.get(urls[0], headers={"Range": header}, timeout=30)
        assert response.status_code == status, header
        assert response.headers["Content-Range"] == content_range
        if body is not None:
            assert response.content == body
    assert data[-4:] == b"PAR1"

    base, _, token = urls[0].partition("?token=")
    assert requests.get(f"{base}?token={'0' * len(token)}", timeout=10).status_code == 403
    assert requests.get(base, timeout=10).status_code == 403


def test_parquet_download_faults(fresh_emulator, demo_data) -> None:
    run = find_run(fresh_emulator.store, "nlp", "long-pretraining")
    url = post(fresh_emulator.url, PARQUET_HISTORY, variables={"name": run.name}).json()["data"][
        "project"
    ]["run"]["parquetHistory"]
    url = url["parquetUrls"][0]
    fresh_emulator.set_faults(FaultPlan(script=[Fault("status", match="parquet", status=500)]))
    assert requests.get(url, timeout=30).status_code == 500
    assert requests.get(url, timeout=30).status_code == 200


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


# -- the command -------------------------------------------------------------------------------


def test_command_serves_and_stops_on_sigterm(tmp_path) -> None:
    url_file = tmp_path / "url"
    command = [
        sys.executable,
        "-m",
        "tap_wandb.emulator",
        "--port",
        "0",
        "--url-file",
        str(url_file),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90  # it builds the demo data first (a loaded CI)
        while not url_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no URL file after 90 s"
            time.sleep(0.05)
        url = url_file.read_text()
        assert url.startswith("http://127.0.0.1:")
        viewer = post(url, VIEWER).json()["data"]["viewer"]
        assert viewer["username"] == DEMO_USER
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=15)
        assert process.returncode == 0
        assert url in stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
