"""Projects, sweeps, artifacts with run lineage, and system metrics: the emulator against the
official client (wandb 0.31.0).

Expected values come from the store's data classes, computed here without the emulator's
encoding code.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from typing import Any

import pytest
import wandb
import yaml

from tap_wandb.emulator import DEMO_USER, advance, demo_store
from tap_wandb.emulator.artifacts import Artifact
from tap_wandb.emulator.store import Run, Store
from tests.conftest import official_client
from tests.emulator_support import assert_same, post

DEMO_TEAM = "acme-research"
WANDB_TIME = "%Y-%m-%dT%H:%M:%S"
VERSION_ALIAS = re.compile(r"v\d+")
OUTPUTS_PAGE = """
query P($entity: String!, $project: String!, $run: String!, $after: String) {
  project(name: $project, entityName: $entity) {
    run(name: $run) {
      outputArtifacts(first: 50, after: $after) {
        totalCount
        edges { node { versionIndex } }
        pageInfo { endCursor hasNextPage }
      }
    }
  }
}
"""


def _time(value: dt.datetime | None) -> str | None:
    return value.strftime(WANDB_TIME) if value else None


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _runs(store: Store) -> list[Run]:
    return sorted(store.all_runs(), key=lambda r: (r.entity, r.project, r.created_at, r.seq))


def _client_runs(client, store: Store) -> dict[str, Any]:
    """Every run of the store as the client lists it (one listing per project)."""
    found = {}
    for entity, project in store.projects:
        listing = client.runs(f"{entity}/{project}", per_page=50, lazy=False)
        found.update({r.id: r for r in listing})
    return found


# -- projects and server features ----------------------------------------------------------------


def test_projects_have_the_fields_the_client_reads(client, demo_data) -> None:
    for entity in (DEMO_USER, DEMO_TEAM):
        listed = {p.name: p for p in client.projects(entity, per_page=2)}
        stored = {name: p for (e, name), p in demo_data.projects.items() if e == entity}
        assert listed.keys() == stored.keys()
        for name, project in listed.items():
            attrs = project._attrs
            assert attrs["name"] == name and attrs["entityName"] == entity
            assert attrs["createdAt"] == _time(stored[name].created_at)
            assert attrs["isBenchmark"] is False
            assert attrs["user"]["username"] == entity
            # The project lookup (GetProject) agrees with the listing.
            assert client.project(name, entity).id == project.id
        assert len({p.id for p in listed.values()}) == len(listed)


def test_server_features_put_the_client_on_its_normal_paths(emulator, client, demo_data) -> None:
    body = post(
        emulator.url, "query ServerFeaturesQuery { serverInfo { features { name isEnabled } } }"
    )
    features = {f["name"]: f["isEnabled"] for f in body.json()["data"]["serverInfo"]["features"]}
    assert features == {"SWEEPS_QUERY_FILTERING": True, "ARTIFACT_DIGEST_ALGORITHM": True}
    # Filtering sweeps raises UnsupportedError unless the server reports SWEEPS_QUERY_FILTERING.
    cancelled = client.project("vision", DEMO_USER).sweeps(filters={"state": "CANCELED"})
    assert [s.id for s in cancelled] == [
        s.name for s in demo_data.projects[(DEMO_USER, "vision")].sweeps.values()
        if s.state == "CANCELED"
    ]  # fmt: skip
    # Without ARTIFACT_DIGEST_ALGORITHM the client would not ask and would assume MANIFEST_MD5.
    xxh = next(a for a in demo_data.artifacts if a.digest_algorithm == "MANIFEST_XXH128")
    run = next(r for r in demo_data.all_runs() if xxh in r.logged_artifacts)
    logged = client.run(f"{run.entity}/{run.project}/{run.name}").logged_artifacts()
    assert [a.digest_algorithm.value for a in logged] == ["MANIFEST_XXH128"]


# -- sweeps --------------------------------------------------------------------------------------


def _expected_sweep(store: Store, entity: str, project: str, sweep) -> dict[str, Any]:
    runs = [
        r for r in store.projects[(entity, project)].runs.values() if r.sweep_name == sweep.name
    ]
    loss = sweep.best_loss
    return {
        "name": sweep.name,
        "displayName": sweep.display_name,
        "method": sweep.method,
        "state": sweep.state,
        "description": sweep.description,
        "bestLoss": None if loss is None or math.isnan(loss) else loss,
        "config": sweep.config,
        "createdAt": _time(sweep.created_at),
        "updatedAt": _time(sweep.updated_at),
        "runCount": len(runs),
        "runCountExpected": sweep.run_count_expected,
    }


def _sweep_attrs(sweep) -> dict[str, Any]:
    return {k: v for k, v in sweep._attrs.items() if k not in ("id", "__typename")}


def test_project_sweeps_listing_and_fields(emulator, client, demo_data) -> None:
    emulator.reset_stats()
    listed, ids = 0, set()
    for (entity, project_name), project in demo_data.projects.items():
        stored = sorted(project.sweeps.values(), key=lambda s: (s.created_at, s.internal_id))
        sweeps = client.project(project_name, entity).sweeps(per_page=2)
        got = list(sweeps)
        assert [s.id for s in got] == [s.name for s in stored]
        assert len(sweeps) == len(stored)  # totalSweeps
        for sweep, want in zip(got, stored, strict=True):
            assert _sweep_attrs(sweep) == _expected_sweep(demo_data, entity, project_name, want)
            assert sweep.config == yaml.safe_load(want.config)
        listed += len(got)
        ids.update(s._attrs["id"] for s in got)
    # One GetSweep per listed sweep: the legacy fallback (sent after an error) was never needed.
    assert emulator.stats()["fields"]["project.sweep"] == listed
    assert listed >= 10 and len(ids) == listed


def test_sweep_lookup_runs_and_best_run(client, demo_data) -> None:
    vision = demo_data.projects[(DEMO_USER, "vision")]
    for sweep in vision.sweeps.values():
        got = client.sweep(f"{DEMO_USER}/vision/{sweep.name}")
        assert _sweep_attrs(got) == _expected_sweep(demo_data, DEMO_USER, "vision", sweep)
        runs = sorted(
            (r for r in vision.runs.values() if r.sweep_name == sweep.name),
            key=lambda r: (r.created_at, r.seq),
        )
        assert [r.id for r in got.runs] == [r.name for r in runs]
        for run in got.runs:
            assert run.sweep_name == sweep.name
            # The run's own sweep lookup (GetSweep with an undeclared withRuns variable).
            assert _sweep_attrs(run.sweep) == _sweep_attrs(got)
    # A maximised metric that is finite in every summary: the best run is the largest value.
    unicode = client.sweep(f"{DEMO_USER}/vision/swp1")
    assert unicode.name == "ランダム探索 β 🚀" and "résumé" in unicode._attrs["description"]
    candidates = [r for r in vision.runs.values() if r.sweep_name == "swp1"]
    assert unicode.best_run().id == max(candidates, key=lambda r: r.summary["best/acc"]).name
    with pytest.raises(wandb.errors.CommError, match="Could not find sweep"):
        client.sweep(f"{DEMO_USER}/vision/nosuchsw")


def test_seeded_sweeps_bite(demo_data) -> None:
    sweeps = [s for p in demo_data.projects.values() for s in p.sweeps.values()]
    loss = [s.best_loss for s in sweeps]
    assert any(v is not None and math.isnan(v) for v in loss) and None in loss
    assert any(re.search(r"[^\x00-\x7f]", s.display_name or "") for s in sweeps)
    assert any(re.search(r"[^\x00-\x7f]", s.description or "") for s in sweeps)
    assert {s.method for s in sweeps} == {"bayes", "random", "grid"}
    assert {"PENDING", "RUNNING", "FINISHED", "CANCELED", "PAUSED"} <= {s.state for s in sweeps}
    configs = [yaml.safe_load(s.config) for s in sweeps]
    assert all("method" in c for c in configs) and any("metric" not in c for c in configs)
    # PyYAML (the client's parser) reads "1e-5" as a string; a YAML 1.2 parser would not.
    assert any(c["parameters"].get("lr", {}).get("min") == "1e-5" for c in configs)
    for sweep in sweeps:
        project = demo_data.projects[(sweep.entity, sweep.project)]
        runs = [r for r in project.runs.values() if r.sweep_name == sweep.name]
        metric = yaml.safe_load(sweep.config).get("metric")
        if runs and metric:
            # Runs that logged anything hold the sweep's metric in their summary.
            assert all(metric["name"] in r.summary for r in runs if r.history)
    # Every run's sweep exists in its project.
    for run in demo_data.all_runs():
        if run.sweep_name:
            assert run.sweep_name in demo_data.projects[(run.entity, run.project)].sweeps


# -- artifacts and lineage -----------------------------------------------------------------------


def _expected_artifact(artifact: Artifact) -> dict[str, Any]:
    source = artifact.collection
    ttl = artifact.ttl_duration_seconds
    step = artifact.history_step
    return {
        "name": f"{source.entity}/{source.project}/{source.name}:v{artifact.version_index}",
        "type": source.type,
        "version": f"v{artifact.version_index}",
        "aliases": [
            a.alias
            for a in artifact.aliases
            if a.collection is source and not VERSION_ALIAS.fullmatch(a.alias)
        ],
        "tags": artifact.tags,
        "metadata": _nan_to_none(artifact.metadata or {}),
        "ttl": dt.timedelta(seconds=ttl) if ttl > 0 else None,
        "description": artifact.description,
        "state": artifact.state,
        "size": artifact.size,
        "digest": artifact.digest,
        "digest_algorithm": artifact.digest_algorithm,
        "commit_hash": artifact.commit_hash,
        "file_count": artifact.file_count,
        "created_at": _time(artifact.created_at),
        "updated_at": _time(artifact.updated_at or artifact.created_at),
        "history_step": None if step is None else max(0, step - 1),
    }


def _client_artifact(artifact) -> dict[str, Any]:
    return {
        "name": artifact.qualified_name,
        "type": artifact.type,
        "version": artifact.version,
        "aliases": artifact.aliases,
        "tags": artifact.tags,
        "metadata": artifact.metadata,
        "ttl": artifact.ttl,
        "description": artifact.description,
        "state": artifact.state,
        "size": artifact.size,
        "digest": artifact.digest,
        "digest_algorithm": artifact.digest_algorithm.value,
        "commit_hash": artifact.commit_hash,
        "file_count": artifact.file_count,
        "created_at": artifact.created_at,
        "updated_at": artifact.updated_at,
        "history_step": artifact.history_step,
    }


def test_logged_and_used_artifacts_of_every_run(emulator, client, demo_data) -> None:
    client_runs = _client_runs(client, demo_data)
    ids: dict[str, str] = {}  # artifact id -> qualified name, across every list it appears in
    emulator.reset_stats()
    for run in _runs(demo_data):
        client_run = client_runs[run.name]
        for got, stored in (
            (client_run.logged_artifacts(), run.logged_artifacts),
            (client_run.used_artifacts(), run.used_artifacts),
        ):
            assert len(got) == len(stored)  # totalCount
            artifacts = list(got)
            assert [_client_artifact(a) for a in artifacts] == [
                _expected_artifact(a) for a in stored
            ]
            for artifact in artifacts:
                assert ids.setdefault(artifact.id, artifact.qualified_name) == (
                    artifact.qualified_name
                )
    assert len(ids) == len(demo_data.artifacts)
    # 100 per page: the run with more than 100 versions took two requests, the others one.
    pages = sum(-(-max(len(r.logged_artifacts), 1) // 100) for r in demo_data.all_runs())
    assert emulator.stats()["fields"]["project.run.outputArtifacts"] == pages
    assert pages > len(demo_data.all_runs())


def test_lineage_data_bites(demo_data) -> None:
    runs = demo_data.all_runs()
    assert max(len(r.logged_artifacts) for r in runs) > 100
    assert any(not r.logged_artifacts and not r.used_artifacts for r in runs)
    users = Counter(a.internal_id for r in runs for a in r.used_artifacts)
    assert max(users.values()) >= 5  # logged by one run, used by several
    crossing = [(r, a) for r in runs for a in r.used_artifacts]
    assert any(a.collection.project != r.project for r, a in crossing)
    assert any(a.collection.entity != r.entity for r, a in crossing)
    artifacts = demo_data.artifacts
    assert any(a.collection.kind == "SEQUENCE" and re.search(r"[^\x00-\x7f]", a.collection.name)
               for a in artifacts)  # fmt: skip
    assert any(alias.collection.kind == "PORTFOLIO" for a in artifacts for alias in a.aliases)
    assert {"latest", "best", "stable"} <= {x.alias for a in artifacts for x in a.aliases}
    assert any(a.tags for a in artifacts)
    assert any(a.size >= 2**32 for a in artifacts) and any(a.updated_at is None for a in artifacts)
    assert any(a.metadata is None for a in artifacts)

    def has_nan(value: Any) -> bool:
        if isinstance(value, dict):
            return any(has_nan(v) for v in value.values())
        return isinstance(value, float) and math.isnan(value)

    assert any(has_nan(a.metadata) for a in artifacts)
    assert any(isinstance(v, dict) for a in artifacts for v in (a.metadata or {}).values())


def test_artifact_pages_follow_the_cursor(emulator, demo_data) -> None:
    run = max(demo_data.all_runs(), key=lambda r: len(r.logged_artifacts))
    where = {"entity": run.entity, "project": run.project, "run": run.name}
    seen, after, pages = [], None, 0
    while True:
        body = post(emulator.url, OUTPUTS_PAGE, variables={**where, "after": after}).json()
        page = body["data"]["project"]["run"]["outputArtifacts"]
        assert page["totalCount"] == len(run.logged_artifacts)
        seen += [edge["node"]["versionIndex"] for edge in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [a.version_index for a in run.logged_artifacts]
    assert pages == -(-len(run.logged_artifacts) // 50)
    body = post(emulator.url, OUTPUTS_PAGE, variables={**where, "after": "bm9wZTox"}).json()
    assert body["data"]["project"]["run"]["outputArtifacts"] is None
    assert "invalid cursor" in body["errors"][0]["message"]


ALIASES = """
query A($entity: String!, $project: String!, $run: String!) {
  project(name: $project, entityName: $entity) {
    run(name: $run) {
      outputArtifacts(first: 500) {
        edges { node { versionIndex aliases { alias artifactCollection {
          __typename name project { name entity { name } } } } } }
      }
    }
  }
}
"""


def test_aliases_on_the_wire_name_their_collection(emulator, demo_data) -> None:
    """The client keeps only aliases of the version's own sequence; the wire has them all."""
    linked = next(
        a for a in demo_data.artifacts if any(x.collection is not a.collection for x in a.aliases)
    )
    run = next(r for r in demo_data.all_runs() if linked in r.logged_artifacts)
    where = {"entity": run.entity, "project": run.project, "run": run.name}
    edges = post(emulator.url, ALIASES, variables=where).json()["data"]["project"]["run"]
    nodes = {e["node"]["versionIndex"]: e["node"] for e in edges["outputArtifacts"]["edges"]}
    got = [
        (
            x["alias"],
            x["artifactCollection"]["__typename"],
            x["artifactCollection"]["project"]["entity"]["name"],
            x["artifactCollection"]["project"]["name"],
            x["artifactCollection"]["name"],
        )
        for x in nodes[linked.version_index]["aliases"]
    ]
    kinds = {"SEQUENCE": "ArtifactSequence", "PORTFOLIO": "ArtifactPortfolio"}
    c = linked.collection
    assert got == [
        (
            x.alias,
            kinds[x.collection.kind],
            x.collection.entity,
            x.collection.project,
            x.collection.name,
        )
        for x in linked.aliases
    ]
    assert ("production", "ArtifactPortfolio") in [g[:2] for g in got]
    assert (f"v{linked.version_index}", "ArtifactSequence", c.entity, c.project, c.name) in got


# -- system metrics ------------------------------------------------------------------------------


def test_system_metrics_events_as_the_client_reads_them(client, demo_data) -> None:
    runs = _runs(demo_data)
    client_runs = _client_runs(client, demo_data)
    gpus = Counter()
    for run in runs:
        client_run = client_runs[run.name]
        rows = client_run.history(stream="system", pandas=False)
        if len(run.events) <= 500:
            assert_same(rows, run.events)
        else:
            assert len(rows) == 500  # the client's default sample
        expected = (
            {k: v for k, v in run.events[-1].items() if k.startswith("system.")}
            if run.events
            else {}
        )
        assert_same(client_run.system_metrics, expected)
        gpus[len({k.split(".")[2] for k in expected if k.startswith("system.gpu.")})] += 1
        for row in rows:
            assert row["_wandb"] is True and "_step" not in row
            assert {"system.cpu", "system.memory", "_runtime", "_timestamp"} <= row.keys()
    assert {0, 1, 2, 4} <= set(gpus)
    assert any(not r.events and r.history for r in runs)  # stats turned off
    assert any(r.events and r.events[-1]["_timestamp"] % 1 for r in runs)


def test_system_metrics_sampling_of_a_long_run(client, demo_data) -> None:
    run = max(demo_data.all_runs(), key=lambda r: len(r.events))
    assert len(run.events) > 500
    client_run = client.run(f"{run.entity}/{run.project}/{run.name}")
    by_runtime = {row["_runtime"]: row for row in run.events}
    for samples in (500, 37):
        rows = client_run.history(stream="system", samples=samples, pandas=False)
        assert len(rows) == samples
        runtimes = [row["_runtime"] for row in rows]
        assert runtimes == sorted(set(runtimes))
        for row in rows:
            assert_same(row, by_runtime[row["_runtime"]])


# -- schema: only what the client selects ----------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "type_name"),
    [
        ("sweeps { edges { node { id priorRunsCount } } }", "Sweep"),
        ('run(name: "x") { outputArtifacts { edges { node { id ttlStatus } } } }', "Artifact"),
        ('run(name: "x") { inputArtifacts { edges { cursor } } }', "ArtifactEdge"),
    ],
)
def test_unknown_fields_fail_validation(emulator, selection: str, type_name: str) -> None:
    body = post(
        emulator.url, f'{{ project(name: "vision", entityName: "acme") {{ {selection} }} }}'
    )
    message = body.json()["errors"][0]["message"]
    assert "Cannot query field" in message and f"type '{type_name}'" in message


def _fingerprint(store: Store) -> str:
    sweeps = [vars(s) for p in store.projects.values() for s in p.sweeps.values()]
    artifacts = [
        {**vars(a), "collection": vars(a.collection), "aliases": [x.alias for x in a.aliases]}
        for a in store.artifacts
    ]
    lineage = [
        (
            r.name,
            [a.internal_id for a in r.logged_artifacts],
            [a.internal_id for a in r.used_artifacts],
        )
        for r in _runs(store)
    ]
    events = [(r.name, r.events, r.system_metrics) for r in _runs(store)]
    return json.dumps([sweeps, artifacts, lineage, events], default=str, sort_keys=True)


def test_seeded_objects_are_deterministic(demo_data) -> None:
    assert _fingerprint(demo_store()) == _fingerprint(demo_data)


# -- advancing the data ----------------------------------------------------------------------------


def test_advance_moves_latest_and_grows_events_and_sweeps(fresh_emulator) -> None:
    store = fresh_emulator.store
    before_events = {r.name: list(r.events) for r in store.all_runs()}
    before_runs = set(store.all_runs())
    counts = {
        (s.project, s.name): sum(1 for r in p.runs.values() if r.sweep_name == s.name)
        for p in store.projects.values()
        for s in p.sweeps.values()
    }
    advance(store)
    new_runs = [r for r in store.all_runs() if r not in before_runs]
    tokenizer = [a for a in store.artifacts if a.collection.name == "bpe-tokenizer"]
    assert len(tokenizer) == 2
    client = official_client(fresh_emulator.url)
    old = client.run(
        f"{DEMO_USER}/nlp/{next(r for r in new_runs if r.project == 'nlp').name}"
    ).used_artifacts()
    assert [(a.version, a.aliases) for a in old] == [("v0", [])]  # latest moved to v1
    for run in store.all_runs():
        if run.name in before_events:
            assert_same(run.events[: len(before_events[run.name])], before_events[run.name])
    grown = [
        s
        for p in store.projects.values()
        for s in p.sweeps.values()
        if sum(1 for r in p.runs.values() if r.sweep_name == s.name) > counts[(s.project, s.name)]
    ]
    assert grown
    for sweep in grown:
        got = client.sweep(f"{sweep.entity}/{sweep.project}/{sweep.name}")
        assert got._attrs["runCount"] > counts[(sweep.project, sweep.name)]
