"""Seeded artifacts for the demo dataset: versions, aliases, tags and run lineage.

What bites: datasets logged by one run and used by many, across projects and entities; a run
that logged more than 100 versions (so readers must page); a unicode collection name; a
version linked into a portfolio in another entity (an alias the client leaves out); metadata
with NaN, nesting and unicode; sizes beyond 32 bits; a null updatedAt; runs with no
artifacts at all.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

from tap_wandb.emulator.artifacts import (
    Artifact,
    ArtifactCollection,
    link_artifact,
    log_artifact,
    use_artifact,
)
from tap_wandb.emulator.store import Run, Store

CHECKPOINTS = 120  # versions one nlp run logs: more than the client's 100 per page
THIRTY_DAYS = 30 * 24 * 3600


def _ordered(store: Store, entity: str, project: str) -> list[Run]:
    found = store.project(entity, project)
    runs = list(found.runs.values()) if found else []
    return sorted(runs, key=lambda r: (r.created_at, r.seq))


def _at_step(run: Run, step: int | None) -> dt.datetime:
    """When a run reached a step (its start, without a step)."""
    runtime = next((row["_runtime"] for row in run.history if row["_step"] == step), 0.0)
    return run.created_at + dt.timedelta(seconds=runtime)


class _Seeder:
    """Draws every random value of the demo artifacts from one generator, in a fixed order."""

    def __init__(self, store: Store, seed: int) -> None:
        self.store = store
        self.rng = random.Random(f"{seed}:artifacts")

    def version(
        self,
        run: Run,
        collection: ArtifactCollection,
        *,
        step: int | None = None,
        aliases: tuple[str, ...] = (),
        **fields: Any,
    ) -> Artifact:
        rng = self.rng
        created = _at_step(run, step) + dt.timedelta(seconds=rng.randint(1, 20))
        values: dict[str, Any] = {
            "created_at": created,
            "updated_at": created + dt.timedelta(seconds=rng.randint(0, 90)),
            "size": rng.randint(10_000, 900_000_000),
            "digest": f"{rng.getrandbits(128):032x}",
            "file_count": rng.randint(1, 400),
            "commit_hash": f"{rng.getrandbits(48):012x}",
            # W&B's run step counter when the version was logged: one past the last step the
            # run logged history at (the client reports it minus one).
            "history_step": None if step is None else step + 1,
        }
        values.update(fields)
        artifact = Artifact(collection=collection, version_index=0, **values)
        return log_artifact(self.store, run, artifact, aliases)

    def checkpoints(self, run: Run, collection: ArtifactCollection) -> list[Artifact]:
        """CHECKPOINTS versions at evenly spread steps; ``best`` on the lowest val_loss."""
        steps = [row["_step"] for row in run.history]
        picks = [steps[i * (len(steps) - 1) // (CHECKPOINTS - 1)] for i in range(CHECKPOINTS)]
        losses = [round(2.5 * math.exp(-i / 40) + self.rng.random() * 0.2, 5) for i in picks]
        best = min(range(CHECKPOINTS), key=losses.__getitem__)
        versions = []
        for i, (step, loss) in enumerate(zip(picks, losses, strict=True)):
            versions.append(
                self.version(
                    run,
                    collection,
                    step=step,
                    aliases=("best",) if i == best else (),
                    metadata={"epoch": i, "val_loss": loss, "optimizer": {"name": "adam"}},
                    # one version beyond 4 GiB: sizes need 64 bits
                    size=5_368_709_120 + i if i == 77 else 480_000_000 + i * 1024,
                    file_count=3,
                    ttl_duration_seconds=THIRTY_DAYS,
                    ttl_is_inherited=False,
                )
            )
        return versions


def seed_artifacts(store: Store, seed: int) -> None:
    """The demo's collections and versions, logged and used by its runs."""
    vision = _ordered(store, "acme", "vision")
    nlp = _ordered(store, "acme", "nlp")
    shared = _ordered(store, "acme-research", "shared")
    if not (vision and nlp and shared):
        return
    s = _Seeder(store, seed)

    imagenet = ArtifactCollection("acme", "vision", "imagenet-subset", "dataset")
    first = s.version(
        vision[0],
        imagenet,
        history_step=0,  # logged before the run's first step
        description="ImageNet subset, first cut",
        metadata={
            "rows": 120_000,
            "split": {"train": 0.8, "val": 0.2},
            "classes": ["cat", "dog", "🦊"],
            "quality": math.nan,
            "source": {"uri": "s3://acme/imagenet", "md5": None},
        },
        size=5_300_000_000,
    )
    second = s.version(
        vision[min(3, len(vision) - 1)],
        imagenet,
        aliases=("stable",),
        description="Second cut — fewer duplicates\nsee ticket #42",
        metadata={"rows": 118_500, "dedup": {"removed": 1500, "method": "phash"}, "nan": math.nan},
        tags=["curated", "ünïcode"],
        size=5_210_000_000,
    )
    second.updated_at = second.created_at + dt.timedelta(days=3)  # tagged later
    for run in vision[1:3]:
        use_artifact(run, first)
    for run in [*vision[4::2], *nlp[1:5:3]]:
        use_artifact(run, second)

    corpus = ArtifactCollection("acme-research", "shared", "shared-corpus", "dataset")
    corpus_versions = [
        s.version(
            run,
            corpus,
            aliases=("stable",) if i == 1 else (),
            metadata={"tokens": 10**9 * (i + 1), "langs": ["en", "日本語"]} if i else None,
        )
        for i, run in enumerate(shared)
    ]
    corpus_versions[0].updated_at = None  # never updated
    for run in vision[5:7]:
        use_artifact(run, corpus_versions[min(1, len(corpus_versions) - 1)])
    for run in nlp[2:8]:
        use_artifact(run, corpus_versions[-1])
    if len(shared) > 2:
        use_artifact(shared[2], corpus_versions[1])  # a run using an older version, then logging

    tokenizer = ArtifactCollection("acme", "nlp", "bpe-tokenizer", "dataset")
    vocab = s.version(
        nlp[0], tokenizer, metadata={}, description="", file_count=2, ttl_is_inherited=False
    )
    for run in nlp[1:20:2]:
        use_artifact(run, vocab)

    # The longest regular nlp run (not the exported one) saves a checkpoint now and then.
    trainer = max((r for r in nlp if not r.exported_before_step), key=lambda r: len(r.history))
    models = ArtifactCollection("acme", "nlp", f"model-{trainer.name}", "model")
    checkpoints = s.checkpoints(trainer, models)
    best = next(a for a in checkpoints if "best" in a.alias_names)
    registry = ArtifactCollection(
        "acme-research", "shared", "production-models", "model", "PORTFOLIO"
    )
    link_artifact(best, registry, "production")

    # Evaluation runs of vision use checkpoints and log results under a unicode name.
    results = ArtifactCollection("acme", "vision", "評価-résultats", "evaluation")
    evaluators = [r for r in vision if r.job_type == "eval" and r.history][:4]
    for i, run in enumerate(evaluators):
        use_artifact(run, best)
        use_artifact(run, checkpoints[-1 - i])
        s.version(
            run,
            results,
            step=run.history[-1]["_step"],
            digest_algorithm="MANIFEST_XXH128",
            metadata={
                "accuracy": round(s.rng.random(), 4),
                "per_class": {"猫": 0.91, "犬": 0.88, "nan_class": math.nan},
                "confusion": [[50, 2], [3, 45]],
            },
            description=None if i % 2 else f"評価 — run {run.display_name}",
        )

    # A few training runs log a table of predictions, one version each.
    for run in [r for r in vision if r.job_type == "train" and r.history][:5]:
        table = ArtifactCollection("acme", "vision", f"run-{run.name}-predictions", "run_table")
        s.version(run, table, step=run.history[len(run.history) // 2]["_step"], file_count=1)


def _latest(store: Store, entity: str, project: str, name: str) -> Artifact | None:
    versions = [
        a
        for a in store.artifacts
        if (a.collection.entity, a.collection.project, a.collection.name) == (entity, project, name)
    ]
    return versions[-1] if versions else None


def advance_artifacts(store: Store, new_runs: list[Run], seed: int) -> None:
    """Between two syncs: new runs use the latest datasets; one logs a new tokenizer version
    (so ``latest`` leaves the old version, whose updatedAt does not change)."""
    s = _Seeder(store, seed)
    imagenet = _latest(store, "acme", "vision", "imagenet-subset")
    tokenizer = _latest(store, "acme", "nlp", "bpe-tokenizer")
    logged = False
    for run in new_runs:
        if run.project == "vision" and imagenet:
            use_artifact(run, imagenet)
        if run.project == "nlp" and tokenizer:
            use_artifact(run, tokenizer)
            if not logged:
                s.version(run, tokenizer.collection, metadata={"vocab": 52_000}, file_count=2)
                logged = True


def seed_bench_artifacts(store: Store, runs: list[Run], seed: int) -> None:
    """Lineage for benchmarks: every run uses the latest version of a shared dataset (a new
    version every 500 runs) and logs a model version of its own."""
    s = _Seeder(store, seed)
    dataset = ArtifactCollection(runs[0].entity, runs[0].project, "bench-data", "dataset")
    latest = None
    for index, run in enumerate(runs):
        if index % 500 == 0:
            latest = s.version(run, dataset, metadata={"rows": 10_000 + index})
        else:
            use_artifact(run, latest)
        model = ArtifactCollection(run.entity, run.project, f"model-{run.name}", "model")
        s.version(run, model, metadata={"val_loss": round(s.rng.random(), 4)}, file_count=3)
