"""artifacts and run_artifacts: the artifact versions that synced runs logged or used, and
the lineage edges between runs and those versions.

Both read what the runs page carried for the run being synced (its first page of logged and
used artifacts); a run with more than a page gets the rest from a per-run query, read once
for both streams. Values are those of the official client's ``run.logged_artifacts()`` and
``run.used_artifacts()``.
"""

from __future__ import annotations

import typing as t

from singer_sdk import typing as th
from typing_extensions import override

from tap_wandb.streams.base import BLOB, RUN_KEY, RunChildStream
from tap_wandb.streams.run_documents import ARTIFACTS_PAGE_SIZE, RUN_ARTIFACTS
from tap_wandb.streams.runs import RunsStream
from tap_wandb.values import decode_json_string, rfc3339

if t.TYPE_CHECKING:
    import logging

    from singer_sdk.helpers.types import Context

# Direction of a lineage edge -> the Run field that lists its artifact versions.
DIRECTIONS = {"logged": "outputArtifacts", "used": "inputArtifacts"}


def run_artifact_nodes(stream: RunChildStream, context: Context) -> dict[str, list[dict]]:
    """{direction: artifact nodes} of the run being synced, every page read; kept with the
    run's raw data, so that the second of the two streams reads nothing again."""
    current = stream.current_run(context)
    if "artifact_nodes" not in current:
        current["artifact_nodes"] = {
            direction: list(_all_nodes(stream, context, direction, current.get(field)))
            for direction, field in DIRECTIONS.items()
        }
    return current["artifact_nodes"]


def _all_nodes(
    stream: RunChildStream, context: Context, direction: str, page: dict[str, t.Any] | None
) -> t.Iterator[dict[str, t.Any]]:
    """The nodes of the run's first page (None: the listing carried none), then of the pages
    after it, each version once."""
    seen: set[str] = set()
    after = None
    if page is not None:
        yield from _new_nodes(page, seen)
        page_info = page.get("pageInfo") or {}
        if not page_info.get("hasNextPage"):
            return
        after = page_info.get("endCursor")  # None: read again from the start
    entity, project, run_id = context["entity"], context["project"], context["run_id"]
    pages = stream.wandb.client.pages(
        RUN_ARTIFACTS[direction],
        {"entity": entity, "project": project, "run": run_id, "first": ARTIFACTS_PAGE_SIZE},
        connection=_run_connection,
        what=f"artifacts {direction} by run {entity}/{project}/{run_id}",
        after=after,
    )
    for data in pages:
        yield from _new_nodes(_run_connection(data) or {}, seen)


def _run_connection(data: dict[str, t.Any]) -> dict[str, t.Any] | None:
    return ((data.get("project") or {}).get("run") or {}).get("artifacts")


def _new_nodes(page: dict[str, t.Any], seen: set[str]) -> t.Iterator[dict[str, t.Any]]:
    for edge in page.get("edges") or []:
        node = (edge or {}).get("node") or {}
        artifact_id = node.get("id")
        if artifact_id and artifact_id not in seen and _source(node) is not None:
            seen.add(artifact_id)
            yield node


def _source(node: dict[str, t.Any]) -> tuple[str, str, str] | None:
    """(entity, project, collection) of the sequence a version was logged to; None when W&B
    names no project (the client then leaves the version out)."""
    sequence = node.get("artifactSequence") or {}
    project = sequence.get("project")
    if not project:
        return None
    return (project.get("entity") or {}).get("name"), project.get("name"), sequence.get("name")


def _is_version_alias(alias: str) -> bool:
    # As the client's wandb.util.alias_is_version_index: "v0", "v12"...
    return len(alias) >= 2 and alias[0] == "v" and alias[1:].isnumeric()


def _own_aliases(node: dict[str, t.Any], source: tuple[str, str, str]) -> list[str]:
    """The version's aliases in its own collection, version aliases ("v3") left out, as the
    client's Artifact.aliases: an alias a registry (portfolio) gives it belongs there."""
    names = []
    for alias in node.get("aliases") or []:
        name = alias.get("alias")
        collection = alias.get("artifactCollection") or {}
        project = collection.get("project") or {}
        where = ((project.get("entity") or {}).get("name"), project.get("name"))
        own = (*where, collection.get("name")) == source
        if own and isinstance(name, str) and not _is_version_alias(name):
            names.append(name)
    return sorted(names)


def artifact_record(node: dict[str, t.Any], logger: logging.Logger) -> dict[str, t.Any]:
    """An ``artifacts`` record from a node that has a source (see :func:`_source`)."""
    source = _source(node)
    assert source is not None
    entity, project, collection = source
    metadata = node.get("metadata")
    created_at = rfc3339(node.get("createdAt"))
    history_step = node.get("historyStep")
    return {
        "entity": entity,
        "project": project,
        "artifact_id": node["id"],
        "collection": collection,
        "version_index": node.get("versionIndex"),
        "type": (node.get("artifactType") or {}).get("name"),
        "description": node.get("description"),
        # The client shows no metadata as {}.
        "metadata": decode_json_string(
            metadata, what="metadata", where=f"artifact {node['id']}", logger=logger
        )
        if metadata
        else {},
        "aliases": _own_aliases(node, source),
        "tags": sorted(tag["name"] for tag in node.get("tags") or []),
        "state": node.get("state"),
        "size": node.get("size"),
        "digest": node.get("digest"),
        "file_count": node.get("fileCount"),
        "created_at": created_at,
        # The client reports createdAt for a version never updated.
        "updated_at": rfc3339(node.get("updatedAt")) or created_at,
        # W&B keeps the run's step counter when the version was logged, one past the last
        # history step; the client reports the step itself.
        "history_step": None if history_step is None else max(0, history_step - 1),
    }


class ArtifactsStream(RunChildStream):
    """One record per artifact version a synced run logged or used, once per sync however
    many runs name it. Its entity and project are those of the version's collection, which
    may differ from the run's."""

    name = "artifacts"
    parent_stream_type = RunsStream
    primary_keys = ("entity", "project", "artifact_id")
    schema = th.PropertiesList(
        th.Property("entity", th.StringType, required=True, description="Entity of the collection"),
        th.Property(
            "project", th.StringType, required=True, description="Project of the collection"
        ),
        th.Property(
            "artifact_id", th.StringType, required=True, description="W&B's artifact version ID"
        ),
        th.Property("collection", th.StringType, description="The collection (artifact name)"),
        th.Property("version_index", th.IntegerType, description="N of the version vN"),
        th.Property("type", th.StringType, description="dataset, model, ..."),
        th.Property("description", th.StringType),
        th.Property("metadata", BLOB, description="Metadata (NaN and Infinity become null)"),
        th.Property(
            "aliases",
            th.ArrayType(th.StringType),
            description="Aliases in its collection, sorted (vN left out)",
        ),
        th.Property("tags", th.ArrayType(th.StringType), description="Tags, sorted"),
        th.Property("state", th.StringType, description="PENDING, COMMITTED or DELETED"),
        th.Property("size", th.IntegerType, description="Bytes"),
        th.Property("digest", th.StringType),
        th.Property("file_count", th.IntegerType),
        th.Property("created_at", th.DateTimeType, description="Creation time, UTC"),
        th.Property("updated_at", th.DateTimeType, description="Last update (else creation), UTC"),
        th.Property("history_step", th.IntegerType, description="History step it was logged at"),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._emitted: set[str] = set()  # versions already written in this sync

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        for nodes in run_artifact_nodes(self, context).values():
            for node in nodes:
                if node["id"] not in self._emitted:
                    self._emitted.add(node["id"])
                    yield artifact_record(node, self.logger)


class RunArtifactsStream(RunChildStream):
    """Lineage: one record per artifact version a run logged (``logged``) or used (``used``)."""

    name = "run_artifacts"
    parent_stream_type = RunsStream
    primary_keys = ("entity", "project", "run_id", "artifact_id", "direction")
    schema = th.PropertiesList(
        *RUN_KEY.wrapped.values(),
        th.Property(
            "artifact_id", th.StringType, required=True, description="artifacts.artifact_id"
        ),
        th.Property(
            "direction",
            th.StringType,
            required=True,
            allowed_values=list(DIRECTIONS),
            description="logged or used",
        ),
    ).to_dict()

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        for direction, nodes in run_artifact_nodes(self, context).items():
            for node in nodes:
                yield self.keyed(context, artifact_id=node["id"], direction=direction)
