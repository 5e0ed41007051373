"""artifacts and run_artifacts, record by record against what the official client reads
(``run.logged_artifacts()``, ``run.used_artifacts()``) from the emulator; their cost in
requests; deselection; incremental syncs."""

from __future__ import annotations

import copy
import datetime as dt
from collections import Counter

import pytest

from tap_wandb.client import WandbClient
from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, advance, bench_store
from tap_wandb.emulator.artifacts import use_artifact
from tap_wandb.streams.run_documents import RUN_CHILD_FIELDS, RUNS, RUNS_WITHOUT_UPDATED_AT
from tap_wandb.streams.runs import fingerprint
from tests.conftest import official_client
from tests.tap_runner import (
    DEMO_PROJECTS,
    demo_projects_config,
    discover,
    finite,
    numbers_equal,
    run_tap,
    select_streams,
)

RUN_STREAMS = {"runs", "configs", "summaries", "history"}
OBJECT_STREAMS = {"artifacts", "run_artifacts", "system_metrics"}
KEYS = {
    "artifacts": ("entity", "project", "artifact_id"),
    "run_artifacts": ("entity", "project", "run_id", "artifact_id", "direction"),
    "system_metrics": ("entity", "project", "run_id", "timestamp"),
}


@pytest.fixture(scope="module")
def catalog(emulator):
    """The tap's catalog; ``select_streams`` selects streams in a copy."""
    return discover(demo_projects_config(emulator, page_size=10))


def _selecting(catalog: dict, streams: set[str]) -> dict:
    return select_streams(copy.deepcopy(catalog), streams)


def _runs_pages(log: list[dict]) -> list[dict]:
    return [e for e in log if "project.runs" in e["paths"] and "withArtifacts" in e["variables"]]


def _utc(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sync(emulator):
    emulator.reset_stats()
    run = run_tap(demo_projects_config(emulator, page_size=10))
    return run, emulator.stats(), list(emulator.log)


@pytest.fixture(scope="module")
def oracle(emulator):
    """{(run entity, project, run id): (logged, used)} as the official client lists them."""
    api = official_client(emulator.url)
    found = {}
    for path in DEMO_PROJECTS:
        entity, _, project = path.rpartition("/")
        for run in api.runs(f"{entity or DEMO_USER}/{project}", per_page=50):
            key = (run.entity, run.project, run.id)
            found[key] = (list(run.logged_artifacts()), list(run.used_artifacts()))
    return found


def test_artifacts_match_the_official_client(sync, oracle):
    run, _, _ = sync
    records = {(r["entity"], r["project"], r["artifact_id"]): r for r in run.records("artifacts")}
    expected = {
        (a.entity, a.project, a.id): a for logged, used in oracle.values() for a in [*logged, *used]
    }
    assert len(records) == len(run.records("artifacts"))  # each version once
    assert records.keys() == expected.keys()
    for key, artifact in expected.items():
        record = records[key]
        assert record["collection"] == artifact.name.split(":")[0], key
        assert f"v{record['version_index']}" == artifact.version, key
        assert record["type"] == artifact.type, key
        assert record["description"] == artifact.description, key
        assert numbers_equal(record["metadata"], finite(artifact.metadata)), key
        assert record["aliases"] == sorted(artifact.aliases), key
        assert record["tags"] == sorted(artifact.tags), key
        assert record["state"] == artifact.state, key
        assert record["size"] == artifact.size, key
        assert record["digest"] == artifact.digest, key
        assert record["file_count"] == artifact.file_count, key
        assert _utc(record["created_at"]) == _utc(artifact.created_at), key
        assert _utc(record["updated_at"]) == _utc(artifact.updated_at), key
        assert record["created_at"].endswith("+00:00"), key
        assert record["history_step"] == artifact.history_step, key


def test_run_artifacts_match_the_official_client(sync, oracle):
    run, _, _ = sync
    records = run.records("run_artifacts")
    got = Counter(tuple(r[k] for k in KEYS["run_artifacts"]) for r in records)
    expected = Counter(
        (*key, artifact.id, direction)
        for key, (logged, used) in oracle.items()
        for direction, artifacts in (("logged", logged), ("used", used))
        for artifact in artifacts
    )
    assert got == expected
    assert max(got.values()) == 1


def test_the_demo_lineage_bites(sync, demo_data):
    """What the demo seeds reaches the records: 135 versions, 135 logged and 40 used edges,
    some across projects and entities, a run with more than a page, a registry alias the
    client leaves out, NaN metadata, a version never updated."""
    run, _, _ = sync
    artifacts = {r["artifact_id"]: r for r in run.records("artifacts")}
    edges = run.records("run_artifacts")
    assert len(artifacts) == len(demo_data.artifacts) == 135
    assert Counter(e["direction"] for e in edges) == {"logged": 135, "used": 40}
    across = [
        e
        for e in edges
        if (e["entity"], e["project"])
        != (artifacts[e["artifact_id"]]["entity"], artifacts[e["artifact_id"]]["project"])
    ]
    assert len(across) == 17
    assert {artifacts[e["artifact_id"]]["entity"] for e in across} == {DEMO_USER, "acme-research"}
    assert max(Counter(e["run_id"] for e in edges if e["direction"] == "logged").values()) == 120
    best = next(a for a in artifacts.values() if "best" in a["aliases"])
    assert best["aliases"] == ["best"]  # not "production" (a registry's), not "v42"
    assert any(a["metadata"].get("quality", 1) is None for a in artifacts.values())  # was NaN
    never_updated = [a for a in demo_data.artifacts if a.updated_at is None]
    assert never_updated
    for stored in never_updated:
        record = next(
            a
            for a in artifacts.values()
            if (a["collection"], a["version_index"])
            == (stored.collection.name, stored.version_index)
        )
        assert record["updated_at"] == record["created_at"]
    runs_without = {r["run_id"] for r in run.records("runs")} - {e["run_id"] for e in edges}
    assert len(runs_without) == 17


def test_artifacts_cost_one_request_per_extra_page_of_a_run(sync):
    """The runs pages carry each run's first page of artifacts: the only artifact requests
    are for the run that logged 120 versions (100 per page)."""
    _, stats, log = sync
    pages = _runs_pages(log)
    assert pages and all(e["variables"]["withArtifacts"] for e in pages)
    per_run = [e for e in log if "project.run" in e["paths"]]
    assert len(per_run) == 1
    assert "project.run.outputArtifacts" in per_run[0]["paths"]
    assert per_run[0]["variables"]["after"]  # continued after the listing's first page
    # The rest: the project list and the sweeps pages (a first sync lists no run ids).
    others = [e for e in log if e not in pages and e not in per_run]
    assert all("models" in e["paths"] or "project.sweeps" in e["paths"] for e in others), others
    assert stats["total"] == len(pages) + len(per_run) + len(others)


def test_deselected_streams_cost_no_request_and_no_field(emulator, catalog):
    """Runs streams alone: the runs pages ask for neither artifacts nor system metrics, and
    W&B's reply has no such field; each new stream alone asks for its own only."""
    # nlp: with the 120 versions of one run
    config = demo_projects_config(emulator, page_size=10, projects=["nlp"])
    for selected, artifacts, system in (
        (RUN_STREAMS, False, False),
        ({"artifacts"}, True, False),
        ({"run_artifacts"}, True, False),
        ({"system_metrics"}, False, True),
    ):
        emulator.reset_stats()
        run = run_tap(config, catalog=_selecting(catalog, selected))
        emitted = {m["stream"] for m in run.messages if m["type"] == "RECORD"}
        assert emitted <= selected and selected & OBJECT_STREAMS <= emitted
        pages = _runs_pages(emulator.log)
        assert {(e["variables"]["withArtifacts"], e["variables"]["withSystemMetrics"])
                for e in pages} == {(artifacts, system)}  # fmt: skip
        assert emulator.stats()["total"] == len(pages) + artifacts  # a first sync lists no run ids
    client = WandbClient(emulator.url, DEMO_API_KEY)
    variables = {"entity": DEMO_USER, "project": "vision", "first": 5, "withCount": False,
                 "withArtifacts": False, "withSystemMetrics": False}  # fmt: skip
    data = client.graphql(RUNS, variables, what="runs")
    nodes = [edge["node"] for edge in data["project"]["runs"]["edges"]]
    assert nodes and not any(set(RUN_CHILD_FIELDS) & set(node) for node in nodes)


def test_the_documents_validate_and_change_detection_off_drops_only_run_updated_at(emulator):
    client = WandbClient(emulator.url, DEMO_API_KEY)
    variables = {"entity": DEMO_USER, "project": "nlp", "first": 50, "withCount": True,
                 "withArtifacts": True, "artifactsFirst": 100, "withSystemMetrics": True,
                 "systemMetricsSamples": 5}  # fmt: skip
    for document, has_updated_at in ((RUNS, True), (RUNS_WITHOUT_UPDATED_AT, False)):
        nodes = [e["node"] for e in client.graphql(document, variables, what="runs")["project"]
                 ["runs"]["edges"]]  # fmt: skip
        assert all(("updatedAt" in node) is has_updated_at for node in nodes)
        artifacts = [e["node"] for n in nodes for e in n["outputArtifacts"]["edges"]]
        assert artifacts and all("updatedAt" in a for a in artifacts)


def test_lineage_is_part_of_a_runs_fingerprint_and_its_system_metrics_are_not():
    node = {"name": "a", "updatedAt": "t", "historyKeys": {"lastStep": 3},
            "outputArtifacts": {"edges": [{"node": {"id": "x", "size": 1}}]}}  # fmt: skip
    base = fingerprint(node)
    assert fingerprint({**node, "events": ["{}"]}) == base
    same_ids = {"edges": [{"node": {"id": "x", "size": 2, "aliases": []}}]}
    assert fingerprint({**node, "outputArtifacts": same_ids}) == base
    more = {"edges": [{"node": {"id": "x"}}, {"node": {"id": "y"}}]}
    changed = fingerprint({**node, "outputArtifacts": more})
    assert changed[:8] != base[:8] and changed[8:] == base[8:]  # an edit, not a resume
    assert fingerprint({**node, "inputArtifacts": {"edges": []}}) != base


def _merged(*syncs) -> dict[str, dict[tuple, dict]]:
    tables: dict[str, dict[tuple, dict]] = {stream: {} for stream in KEYS}
    for sync in syncs:
        for stream, key in KEYS.items():
            for record in sync.records(stream):
                tables[stream][tuple(record[k] for k in key)] = record
    return tables


def test_second_sync_emits_only_unfinished_runs_then_new_lineage_appears(fresh_emulator):
    store = fresh_emulator.store
    config = demo_projects_config(fresh_emulator, page_size=10)
    first = run_tap(config)
    unfinished = {r["run_id"] for r in first.records("runs") if r["state"] == "running"}
    second = run_tap(config, state=first.final_state)
    assert {r["run_id"] for r in second.records("run_artifacts")} <= unfinished
    assert second.records("system_metrics") == []
    assert {r["artifact_id"] for r in second.records("artifacts")} == {
        r["artifact_id"] for r in second.records("run_artifacts")
    }

    before = set(store.all_runs())
    advance(store, seed=3)
    third = run_tap(config, state=second.final_state)
    new_runs = {run.name for run in store.all_runs() if run not in before}
    new_edges = {(r["run_id"], r["direction"]) for r in third.records("run_artifacts")}
    assert {(run, "used") for run in new_runs if store_run(store, run).used_artifacts} <= new_edges
    tokenizers = [r for r in third.records("artifacts") if r["collection"] == "bpe-tokenizer"]
    assert sorted((r["version_index"], r["aliases"]) for r in tokenizers) == [
        (0, []),  # "latest" moved on to the new version
        (1, ["latest"]),
    ]
    full = run_tap(config)
    assert _merged(first, second, third) == _merged(full)


def store_run(store, name: str):
    return next(run for run in store.all_runs() if run.name == name)


def test_a_finished_run_that_uses_an_artifact_later_is_synced_with_its_new_lineage(fresh_emulator):
    store = fresh_emulator.store
    config = demo_projects_config(fresh_emulator, page_size=10, projects=["vision"])
    first = run_tap(config)
    finished = sorted(
        (r for r in store.project(DEMO_USER, "vision").runs.values() if r.state == "finished"),
        key=lambda r: r.created_at,
    )
    late = next(r for r in finished if not r.used_artifacts)
    dataset = next(a for a in store.artifacts if a.collection.name == "imagenet-subset")
    with store.lock:
        use_artifact(late, dataset)
        store.touch(late)
    second = run_tap(config, state=first.final_state)
    finished_again = [r["run_id"] for r in second.records("runs") if r["state"] == "finished"]
    assert finished_again == [late.name]
    used = [r for r in second.records("run_artifacts") if r["direction"] == "used"]
    assert [r["run_id"] for r in used if r["run_id"] in finished_again] == [late.name]
    assert _merged(first, second) == _merged(run_tap(config))


def test_requests_grow_with_pages_not_runs(catalog):
    """300 runs, each logging and using artifacts, with system metrics: the new streams add
    no request to the runs pages."""
    store = bench_store(300, 2, system_seconds=120, artifacts=True)
    with Emulator(store) as emulator:
        config = {"api_key": DEMO_API_KEY, "base_url": emulator.url, "entity": DEMO_USER,
                  "projects": ["bench"], "history_mode": "off", "page_size": 50}  # fmt: skip
        totals = {}
        for selected in ({"runs"}, {"runs"} | OBJECT_STREAMS):
            emulator.reset_stats()
            run = run_tap(config, catalog=_selecting(catalog, selected))
            totals[len(selected)] = emulator.stats()["total"]
        assert len(run.records("run_artifacts")) == 600
        assert len(run.records("artifacts")) == 301
        assert len(run.records("system_metrics")) > 1000
    assert totals == {1: 6, 4: 6}  # 6 pages of runs (a first sync lists no run ids)
