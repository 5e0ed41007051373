"""Artifacts and their run lineage: data classes, W&B's bookkeeping, and GraphQL nodes.

A run's ``outputArtifacts`` are the versions it logged, its ``inputArtifacts`` the versions it
used; a used version may live in another project, even another entity. The node fields are
the ones the official client (wandb 0.31.0, ``RunOutputArtifacts``/``RunInputArtifacts``)
selects.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from tap_wandb.emulator.connections import connection
from tap_wandb.emulator.store import Run, Store, wandb_time

ARTIFACT_STATES = ("PENDING", "COMMITTED", "DELETED")
DIGEST_ALGORITHMS = ("MANIFEST_MD5", "MANIFEST_XXH128")
TTL_DISABLED = -2  # what W&B sends as ttlDurationSeconds when no TTL applies


@dataclass(eq=False)
class ArtifactCollection:
    """A named collection of artifact versions in one project.

    ``SEQUENCE`` collections hold the versions runs logged; ``PORTFOLIO`` collections hold
    links to versions of sequences (e.g. a model registry).
    """

    entity: str
    project: str
    name: str
    type: str
    kind: str = "SEQUENCE"


@dataclass(eq=False)
class ArtifactAlias:
    """An alias of a version within one collection (``latest``, ``v3``, ``best``, ...)."""

    alias: str
    collection: ArtifactCollection


@dataclass(eq=False)
class Artifact:
    """One artifact version, as W&B keeps it."""

    collection: ArtifactCollection  # the sequence the version was logged to
    version_index: int
    created_at: dt.datetime
    updated_at: dt.datetime | None
    size: int  # bytes; may exceed 32 bits
    digest: str
    file_count: int
    description: str | None = None
    metadata: dict[str, Any] | None = None  # may hold NaN and nesting
    # Aliases in every collection, the version alias ("v3") included, as W&B returns them.
    aliases: list[ArtifactAlias] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    # The run's step counter when it logged the version: one past its last logged history step
    # (wandb's Artifact.history_step reports max(0, this - 1)).
    history_step: int | None = None
    state: str = "COMMITTED"
    digest_algorithm: str = "MANIFEST_MD5"
    commit_hash: str | None = None  # the client expects one on every committed version
    ttl_duration_seconds: int = TTL_DISABLED
    ttl_is_inherited: bool = True
    internal_id: int = 0

    @property
    def alias_names(self) -> list[str]:
        """Aliases in the artifact's own sequence, version alias included."""
        return [a.alias for a in self.aliases if a.collection is self.collection]


def log_artifact(
    store: Store, run: Run, artifact: Artifact, aliases: tuple[str, ...] = ()
) -> Artifact:
    """Record a version logged by ``run``, as W&B does.

    The version gets the next index in its collection and the aliases ``v<index>`` and
    ``latest`` (which leaves the previous latest version), plus ``aliases``.
    """
    with store.lock:
        if artifact.state not in ARTIFACT_STATES:
            raise ValueError(f"unknown artifact state {artifact.state!r}")
        if artifact.digest_algorithm not in DIGEST_ALGORITHMS:
            raise ValueError(f"unknown digest algorithm {artifact.digest_algorithm!r}")
        versions = [a for a in store.artifacts if a.collection is artifact.collection]
        artifact.version_index = len(versions)
        for previous in versions:
            previous.aliases = [
                a
                for a in previous.aliases
                if not (a.alias == "latest" and a.collection is artifact.collection)
            ]
        names = [f"v{artifact.version_index}", "latest", *aliases]
        artifact.aliases = [ArtifactAlias(name, artifact.collection) for name in names]
        artifact.internal_id = len(store.artifacts) + 1
        store.artifacts.append(artifact)
        run.logged_artifacts.append(artifact)
        return artifact


def use_artifact(run: Run, artifact: Artifact) -> None:
    """Record that ``run`` used a version (once, however often it asks)."""
    if artifact not in run.used_artifacts:
        run.used_artifacts.append(artifact)


def link_artifact(artifact: Artifact, portfolio: ArtifactCollection, alias: str) -> None:
    """Link a version into a portfolio under an alias (the alias belongs to the portfolio)."""
    if portfolio.kind != "PORTFOLIO":
        raise ValueError(f"{portfolio.name} is not a portfolio")
    artifact.aliases.append(ArtifactAlias(alias, portfolio))


# ---------------------------------------------------------------------------------------------
# GraphQL nodes


def _id(kind: str, *parts: Any) -> str:
    return base64.b64encode(":".join([kind, *map(str, parts)]).encode()).decode()


class CollectionNode:
    def __init__(self, collection: ArtifactCollection) -> None:
        self.collection = collection
        # graphql-core resolves the ArtifactCollection interface by this attribute.
        self.__typename = (
            "ArtifactPortfolio" if collection.kind == "PORTFOLIO" else "ArtifactSequence"
        )

    def name(self, info) -> str:
        return self.collection.name

    def project(self, info):
        from tap_wandb.emulator.resolvers import ProjectNode  # resolvers imports this module

        found = info.context["store"].project(self.collection.entity, self.collection.project)
        return ProjectNode(found) if found else None


class ArtifactNode:
    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact

    def id(self, info) -> str:
        return _id("Artifact", self.artifact.internal_id)

    def artifactSequence(self, info) -> CollectionNode:
        return CollectionNode(self.artifact.collection)

    def versionIndex(self, info) -> int:
        return self.artifact.version_index

    def artifactType(self, info) -> dict[str, str]:
        return {"name": self.artifact.collection.type}

    def description(self, info) -> str | None:
        return self.artifact.description

    def metadata(self, info) -> str | None:
        metadata = self.artifact.metadata
        # A JSONString: W&B leaves NaN bare inside it.
        return None if metadata is None else json.dumps(metadata, ensure_ascii=False)

    def ttlDurationSeconds(self, info) -> int:
        return self.artifact.ttl_duration_seconds

    def ttlIsInherited(self, info) -> bool:
        return self.artifact.ttl_is_inherited

    def tags(self, info) -> list[dict[str, str]]:
        entity = self.artifact.collection.entity
        return [{"id": _id("Tag", entity, name), "name": name} for name in self.artifact.tags]

    def historyStep(self, info) -> int | None:
        return self.artifact.history_step

    def state(self, info) -> str:
        return self.artifact.state

    def size(self, info) -> int:
        return self.artifact.size

    def digest(self, info) -> str:
        return self.artifact.digest

    def digestAlgorithm(self, info) -> str:
        return self.artifact.digest_algorithm

    def commitHash(self, info) -> str | None:
        return self.artifact.commit_hash

    def fileCount(self, info) -> int:
        return self.artifact.file_count

    def createdAt(self, info) -> str:
        return wandb_time(self.artifact.created_at)

    def updatedAt(self, info) -> str | None:
        updated = self.artifact.updated_at
        return wandb_time(updated) if updated else None

    def aliases(self, info) -> list[dict[str, Any]]:
        return [
            {
                "id": _id("ArtifactAlias", self.artifact.internal_id, a.alias),
                "alias": a.alias,
                "artifactCollection": CollectionNode(a.collection),
            }
            for a in self.artifact.aliases
        ]


def artifacts_page(artifacts: list[Artifact], first: int | None, after: str | None):
    """``Run.outputArtifacts``/``Run.inputArtifacts``: in the order the run logged/used them."""
    return connection(
        artifacts,
        kind="artifact",
        key=lambda a: a.internal_id,
        node=ArtifactNode,
        first=first,
        after=after,
    )
