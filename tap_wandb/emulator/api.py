"""W&B's GraphQL API over the store: schema, resolvers, wire encodings, parquet exports."""

from __future__ import annotations

import base64
import bisect
import functools
import io
import json
import math
from importlib import resources
from typing import Any

import graphql
import pyarrow as pa
import pyarrow.parquet as pq

from tap_wandb.emulator.artifacts import artifacts_page
from tap_wandb.emulator.store import (
    FilterError,
    Project,
    Run,
    Store,
    encode_cursor,
    page_after,
    select_runs,
    wandb_time,
)
from tap_wandb.emulator.sweeps import SweepNode, sweep_node, sweeps_page, total_sweeps
from tap_wandb.emulator.writes import Writes, screen_updated_at

SCHEMA = graphql.build_schema(
    resources.files("tap_wandb.emulator").joinpath("schema.graphql").read_text()
)
HEAVY_RUN_FIELDS = ("history", "events", "sampledHistory", "parquetHistory", "historyKeys")
# Also counted per request (project.sweeps, project.run.outputArtifacts, ...).
OBJECT_FIELDS = ("sweeps", "sweep", "outputArtifacts", "inputArtifacts")
# What serverInfo.features reports: the client then lists sweeps with filters and selects
# Artifact.digestAlgorithm, as against a current W&B server.
SERVER_FEATURES = ("SWEEPS_QUERY_FILTERING", "ARTIFACT_DIGEST_ALGORITHM")


def wire_json(value: Any) -> str:
    """Encode a JSONString field: W&B leaves bare NaN/Infinity inside these strings."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


def strict(value: Any) -> Any:
    """Replace non-finite floats by null, for the (strict JSON) outer response."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return value


def evenly_sampled(rows: list[Any], samples: int | None) -> list[Any]:
    """Deterministic down-sampling that keeps the first and last row."""
    if samples is None or samples >= len(rows):
        return list(rows)
    if samples <= 0:
        return []
    if samples == 1:
        return [rows[-1]]
    last = len(rows) - 1
    picks = sorted({round(i * last / (samples - 1)) for i in range(samples)})
    return [rows[i] for i in picks]


def warm_history(run: Run) -> None:
    """Encode a run's rows now rather than on the first history request."""
    _encoded_history(run, len(run.history))


@functools.lru_cache(maxsize=8192)
def _encoded_history(run: Run, history_length: int) -> tuple[list[int], list[str]]:
    """The run's steps and wire-encoded rows, computed once per history length."""
    rows = run.history[:history_length]
    return [row["_step"] for row in rows], [wire_json(row) for row in rows]


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return value.get("_type", "object") if isinstance(value.get("_type"), str) else "object"
    if isinstance(value, list):
        return "list"
    return "nil"


def history_keys(run: Run) -> dict[str, Any]:
    return _history_keys(run, len(run.history))


@functools.lru_cache(maxsize=8192)
def _history_keys(run: Run, history_length: int) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for row in run.history[:history_length]:
        for key, value in row.items():
            by_type = counts.setdefault(key, {})
            name = _type_name(value)
            by_type[name] = by_type.get(name, 0) + 1
    result: dict[str, Any] = {
        "keys": {
            key: {"typeCounts": [{"type": t, "count": c} for t, c in by_type.items()]}
            for key, by_type in counts.items()
        }
    }
    if run.history:
        result["lastStep"] = run.last_step
    return result


def _arrow_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if all(isinstance(v, str) for v in present):
        return pa.string()
    raise ValueError("parquet exports hold scalar columns only")


def parquet_files(run: Run) -> list[bytes]:
    """The run's exported history as parquet files (every column present, null where unlogged)."""
    return _parquet_files(run, len(run.history), run.exported_before_step)


@functools.lru_cache(maxsize=1024)
def _parquet_files(run: Run, history_length: int, exported_before_step: int) -> list[bytes]:
    rows = run.history[:history_length]
    rows = [row for row in rows if row["_step"] < exported_before_step]
    keys: list[str] = ["_step"]
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    files = []
    for start in range(0, len(rows), run.rows_per_parquet_file):
        chunk = rows[start : start + run.rows_per_parquet_file]
        columns = {}
        for key in keys:
            values = [row.get(key) for row in chunk]
            columns[key] = pa.array(values, type=_arrow_type(values))
        sink = io.BytesIO()
        pq.write_table(pa.table(columns), sink, row_group_size=5_000)
        files.append(sink.getvalue())
    return files


# ---------------------------------------------------------------------------------------------
# Resolvers: graphql-core's default resolver calls a method named like the field with
# (info, **arguments), or reads an attribute / dict key.


def user_node(username: str, teams: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": base64.b64encode(f"User:{username}".encode()).decode(),
        "name": username,
        "username": username,
        "email": f"{username}@example.com",
        "admin": False,
        "deletedAt": None,
        "entity": username,
        "flags": "{}",
        "apiKeys": {"edges": []},
        "teams": {"edges": [{"node": {"id": t, "name": t}} for t in teams or []]},
    }


class RunNode:
    def __init__(self, run: Run) -> None:
        self.run = run

    def _raw(self, field: str, value: Any) -> str:
        return self.run.raw_fields.get(field) or wire_json(value)

    def id(self, info) -> str:
        r = self.run
        return base64.b64encode(f"Run:v1:{r.name}:{r.project}:{r.entity}".encode()).decode()

    def name(self, info) -> str:
        return self.run.name

    def displayName(self, info) -> str:
        return self.run.display_name

    def projectId(self, info) -> str:
        return str(info.context["store"].project(self.run.entity, self.run.project).internal_id)

    def state(self, info) -> str:
        return self.run.state

    def createdAt(self, info) -> str:
        return wandb_time(self.run.created_at)

    def heartbeatAt(self, info) -> str:
        return wandb_time(self.run.heartbeat_at)

    def updatedAt(self, info) -> str:
        return wandb_time(self.run.updated_at)

    def tags(self, info) -> list[str]:
        return self.run.tags

    def group(self, info):
        return self.run.group

    def jobType(self, info):
        return self.run.job_type

    def sweepName(self, info):
        return self.run.sweep_name

    def commit(self, info):
        return self.run.commit

    def notes(self, info):
        return self.run.notes

    def description(self, info):
        return self.run.description

    def readOnly(self, info) -> bool:
        return False

    def historyLineCount(self, info) -> int:
        return len(self.run.history)

    def user(self, info) -> dict[str, Any]:
        return user_node(self.run.username)

    def config(self, info) -> str:
        return self._raw("config", self.run.config)

    def summaryMetrics(self, info) -> str:
        return self._raw("summaryMetrics", self.run.summary)

    def systemMetrics(self, info) -> str:
        return self._raw("systemMetrics", self.run.system_metrics)

    def historyKeys(self, info) -> dict[str, Any]:
        return history_keys(self.run)

    def history(self, info, samples=None, minStep=None, maxStep=None) -> list[str]:
        if minStep is None and maxStep is None:
            rows = evenly_sampled(self.run.history, 500 if samples is None else samples)
        else:
            # Step windows serve what is not exported yet (the client merges them with parquet).
            steps, encoded = _encoded_history(self.run, len(self.run.history))
            low = max(minStep if minStep is not None else -math.inf, self.run.exported_before_step)
            first = bisect.bisect_left(steps, low)
            last = len(steps) if maxStep is None else bisect.bisect_left(steps, maxStep)
            if samples is not None:
                last = min(last, first + max(samples, 0))
            raw = self.run.raw_history_rows
            return [raw.get(steps[i]) or encoded[i] for i in range(first, last)]
        raw = self.run.raw_history_rows
        return [raw.get(row["_step"]) or wire_json(row) for row in rows]

    def events(self, info, samples=None) -> list[str]:
        rows = evenly_sampled(self.run.events, 500 if samples is None else samples)
        return [wire_json(row) for row in rows]

    def sampledHistory(self, info, specs) -> list[list[dict[str, Any]]]:
        results = []
        for text in specs:
            try:
                spec = json.loads(text)
            except ValueError as error:
                raise FilterError(f"invalid spec {text!r}") from error
            keys = list(dict.fromkeys(spec.get("keys") or []))
            windowed = "minStep" in spec or "maxStep" in spec
            source = (
                self.run.live_rows
                if windowed and self.run.exported_before_step
                else self.run.history
            )
            low = spec.get("minStep", -math.inf)
            high = spec.get("maxStep", math.inf)  # inclusive here, unlike history()
            rows = [
                {key: row[key] for key in keys}
                for row in source
                if low <= row["_step"] <= high and all(key in row for key in keys)
            ]
            results.append(strict(evenly_sampled(rows, spec.get("samples"))))
        return results

    def parquetHistory(self, info, liveKeys) -> dict[str, Any]:
        run = self.run
        base = info.context["base_url"]
        urls = []
        if run.exported_before_step:
            token = info.context["file_token"]
            for index in range(len(parquet_files(run))):
                urls.append(
                    f"{base}/_files/history/{run.entity}/{run.project}/{run.name}/"
                    f"{index}.parquet?token={token}"
                )
        live = [{key: row[key] for key in liveKeys if key in row} for row in run.live_rows]
        return {"parquetUrls": urls, "liveData": strict(live) or None}

    def outputArtifacts(self, info, after=None, first=None) -> dict[str, Any]:
        return artifacts_page(self.run.logged_artifacts, first, after)

    def inputArtifacts(self, info, after=None, first=None) -> dict[str, Any]:
        return artifacts_page(self.run.used_artifacts, first, after)


class ProjectNode:
    def __init__(self, project: Project) -> None:
        self.project = project

    def id(self, info) -> str:
        p = self.project
        return base64.b64encode(f"Project:{p.internal_id}".encode()).decode()

    def internalId(self, info) -> str:
        return str(self.project.internal_id)

    def name(self, info) -> str:
        return self.project.name

    def entityName(self, info) -> str:
        return self.project.entity

    def createdAt(self, info) -> str:
        return wandb_time(self.project.created_at)

    def isBenchmark(self, info) -> bool:
        return False

    def readOnly(self, info) -> bool:
        return False

    def user(self, info) -> dict[str, Any]:
        return user_node(self.project.entity)

    def runCount(self, info, filters=None) -> int:
        runs, _, _ = select_runs(self.project, _filters(filters, info), None)
        return len(runs)

    def runs(self, info, filters=None, order=None, first=None, after=None) -> dict[str, Any]:
        runs, key, descending = select_runs(self.project, _filters(filters, info), order)
        remaining = page_after(runs, key, descending, after)
        first = 50 if first is None else first
        if first < 0:
            raise FilterError("first must not be negative")
        page = remaining[:first]
        edges = [{"cursor": encode_cursor(key(run)), "node": RunNode(run)} for run in page]
        return {
            "edges": edges,
            "pageInfo": {
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
                "hasNextPage": len(remaining) > len(page),
                "hasPreviousPage": bool(after),
            },
        }

    def run(self, info, name) -> RunNode | None:
        run = self.project.runs.get(name)
        return RunNode(run) if run else None

    def entity(self, info) -> dict[str, str]:
        return {
            "id": base64.b64encode(f"Entity:{self.project.entity}".encode()).decode(),
            "name": self.project.entity,
        }

    def totalSweeps(self, info) -> int:
        return total_sweeps(self.project)

    def sweeps(self, info, filters=None, first=None, after=None) -> dict[str, Any]:
        return sweeps_page(self.project, filters, first, after)

    def sweep(self, info, sweepName) -> SweepNode | None:
        return sweep_node(self.project, sweepName)


def _filters(text: str | None, info) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise FilterError(f"filters is not valid JSON: {text!r}") from error
    if not isinstance(value, dict):
        raise FilterError("filters must be a JSON object")
    return screen_updated_at(value, info.context["store"].updated_at_filter)


class Root(Writes):
    def viewer(self, info) -> dict[str, Any] | None:
        username = info.context["username"]
        store: Store = info.context["store"]
        teams = sorted({e for (e, _) in store.projects if e != username})
        return user_node(username, teams)

    def models(self, info, entityName=None, after=None, first=None, order=None):
        store: Store = info.context["store"]
        projects = store.entity_projects(entityName or info.context["username"])
        start = int(base64.b64decode(after).decode().split(":")[1]) + 1 if after else 0
        first = 50 if first is None else first
        page = projects[start : start + first]
        edges = [
            {
                "cursor": base64.b64encode(f"project:{start + i}".encode()).decode(),
                "node": ProjectNode(p),
            }
            for i, p in enumerate(page)
        ]
        return {
            "edges": edges,
            "pageInfo": {
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
                "hasNextPage": start + first < len(projects),
                "hasPreviousPage": start > 0,
            },
        }

    def project(self, info, name=None, entityName=None) -> ProjectNode | None:
        store: Store = info.context["store"]
        found = store.project(entityName or info.context["username"], name or "")
        return ProjectNode(found) if found else None

    def serverInfo(self, info) -> dict[str, Any]:
        return {"features": [{"name": name, "isEnabled": True} for name in SERVER_FEATURES]}


@functools.lru_cache(maxsize=512)
def parse_query(text: str) -> tuple[graphql.DocumentNode | None, tuple[str, ...], tuple[str, ...]]:
    """Parse and validate a document once; returns (document, error messages, field paths)."""
    try:
        document = graphql.parse(text)
    except graphql.GraphQLError as error:
        return None, (error.message,), ()
    errors = graphql.validate(SCHEMA, document)
    return document, tuple(e.message for e in errors), tuple(sorted(_field_paths(document)))


def _field_paths(document: graphql.DocumentNode) -> set[str]:
    """Paths such as ``project.runs`` or ``project.run.history`` that a document asks for."""
    fragments = {
        d.name.value: d
        for d in document.definitions
        if isinstance(d, graphql.FragmentDefinitionNode)
    }
    paths: set[str] = set()

    def walk(selection_set, prefix: str, depth: int) -> None:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, graphql.FragmentSpreadNode):
                walk(fragments[selection.name.value].selection_set, prefix, depth)
            elif isinstance(selection, graphql.InlineFragmentNode):
                walk(selection.selection_set, prefix, depth)
            else:
                name = selection.name.value
                path = f"{prefix}.{name}" if prefix else name
                if depth == 0 or name in ("runs", "run", *HEAVY_RUN_FIELDS, *OBJECT_FIELDS):
                    paths.add(path)
                if depth < 2:
                    walk(selection.selection_set, path, depth + 1)

    for definition in document.definitions:
        if isinstance(definition, graphql.OperationDefinitionNode):
            walk(definition.selection_set, "", 0)
    return paths


def execute(
    store: Store,
    document: graphql.DocumentNode,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    context: dict[str, Any],
) -> dict[str, Any]:
    with store.lock:
        result = graphql.execute(
            SCHEMA,
            document,
            root_value=Root(),
            context_value={**context, "store": store},
            variable_values=variables or {},
            operation_name=operation_name or None,
        )
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [
            {"message": error.message, **({"path": error.path} if error.path else {})}
            for error in result.errors
        ]
    return body
