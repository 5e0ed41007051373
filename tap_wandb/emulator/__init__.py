"""A local stand-in for W&B's GraphQL API, for tests, benchmarks and the demo."""

from tap_wandb.emulator.generator import DEMO_API_KEY, DEMO_USER, advance, bench_store, demo_store
from tap_wandb.emulator.server import Emulator, Fault, FaultPlan
from tap_wandb.emulator.store import Run, Store
from tap_wandb.emulator.writes import finish_run, resume_run

__all__ = [
    "DEMO_API_KEY",
    "DEMO_USER",
    "Emulator",
    "Fault",
    "FaultPlan",
    "Run",
    "Store",
    "advance",
    "bench_store",
    "demo_store",
    "finish_run",
    "resume_run",
]
