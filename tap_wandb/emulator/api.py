"""W&B's GraphQL API over the store: its schema, documents parsed once, and execution (the
resolvers are in resolvers)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import graphql

from tap_wandb.emulator.resolvers import Root
from tap_wandb.emulator.store import Store

SCHEMA = graphql.build_schema(
    resources.files("tap_wandb.emulator").joinpath("schema.graphql").read_text()
)
HEAVY_RUN_FIELDS = ("history", "events", "sampledHistory", "parquetHistory", "historyKeys")
# Also counted per request (project.sweeps, project.run.outputArtifacts, ...).
OBJECT_FIELDS = ("sweeps", "sweep", "outputArtifacts", "inputArtifacts")


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
