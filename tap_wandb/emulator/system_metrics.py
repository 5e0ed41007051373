"""Realistic system-metrics events, as W&B's client samples them while a run is alive.

A run's events are a function of its name (itself seeded) and how long it has run, so a run
that runs longer keeps its earlier events and gains new ones.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

from tap_wandb.emulator.store import Run

SAMPLE_SECONDS = 15.0  # W&B's client samples system metrics about every 15 seconds
NO_STATS_SHARE = 0.12  # runs started with system metrics turned off
GPU_COUNTS = (0, 1, 1, 2, 4)
GPU_METRICS = ("gpu", "memory", "memoryAllocated", "temp", "powerWatts")


def _walk(rng: random.Random, value: float, step: float, low: float, high: float) -> float:
    return min(high, max(low, value + rng.uniform(-step, step)))


def system_events(run: Run, runtime: float | None = None) -> list[dict[str, Any]]:
    """The events rows of a run: ``system.*`` keys, ``_runtime``, ``_timestamp``, ``_wandb``.

    ``runtime``: how long the run ran (default: the runtime of its last history row).
    """
    rng = random.Random(f"{run.name}:system")
    no_stats = rng.random() < NO_STATS_SHARE
    gpus = rng.choice(GPU_COUNTS)
    if no_stats or not (run.history or runtime):
        return []
    runtime = run.history[-1]["_runtime"] if runtime is None else runtime
    start = run.created_at.replace(tzinfo=dt.UTC).timestamp()
    cpu, memory, rss = rng.uniform(5, 60), rng.uniform(20, 40), rng.uniform(800, 4000)
    disk, threads = round(rng.uniform(30, 90), 1), rng.choice([24, 48, 96])
    sent, received = rng.randint(10**5, 10**7), rng.randint(10**6, 10**8)
    load = [rng.uniform(30, 95) for _ in range(gpus)]
    gpu_keys = [tuple(f"system.gpu.{gpu}.{name}" for name in GPU_METRICS) for gpu in range(gpus)]
    rows: list[dict[str, Any]] = []
    at = rng.uniform(1.0, SAMPLE_SECONDS)
    while at <= runtime:
        cpu = _walk(rng, cpu, 8, 0, 100)
        memory = _walk(rng, memory, 0.6, 5, 99)
        rss = _walk(rng, rss, 50, 200, 64_000)
        sent += rng.randint(10**5, 5 * 10**7)
        received += rng.randint(10**5, 10**8)
        row: dict[str, Any] = {
            "system.cpu": round(cpu, 2),
            "system.memory": round(memory, 2),
            "system.disk./.usagePercent": disk,
            "system.network.sent": sent,
            "system.network.recv": received,
            "system.proc.memory.rssMB": round(rss, 3),
            "system.proc.cpu.threads": threads,
        }
        for gpu, (busy, memory_used, allocated, temp, watts) in enumerate(gpu_keys):
            load[gpu] = _walk(rng, load[gpu], 12, 0, 100)
            row[busy] = round(load[gpu])
            row[memory_used] = round(load[gpu] * 0.6)
            row[allocated] = round(20 + load[gpu] * 0.7, 4)
            row[temp] = round(35 + load[gpu] * 0.45)
            # A power reading the driver could not take arrives as NaN.
            power = 60 + load[gpu] * 2.4 if rng.random() > 0.003 else math.nan
            row[watts] = round(power, 3)
        row["_runtime"] = round(at, 6)
        row["_timestamp"] = round(start + at, 6)
        row["_wandb"] = True
        rows.append(row)
        at += SAMPLE_SECONDS + rng.uniform(-0.5, 0.5)
    return rows


def seed_system_metrics(run: Run, runtime: float | None = None) -> None:
    """Give a run its events and the latest of their values as its ``systemMetrics``."""
    run.events = system_events(run, runtime)
    last = run.events[-1] if run.events else {}
    run.system_metrics = {key: value for key, value in last.items() if key.startswith("system.")}
