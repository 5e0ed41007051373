"""Shared fixtures: the W&B emulator on an ephemeral loopback port, the official client, and
the demo run the emulator tests read most."""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, Run, Store, demo_store
from tests.emulator_support import Clock, runs_of

# Before the changes below, for tools that need the user's own caches (uv's, for one).
ORIGINAL_ENVIRON = dict(os.environ)
# The official client (wandb 0.31.0) is the oracle. Keep it local and quiet, and away from the
# user's own W&B settings, before anything imports it.
_CLIENT_HOME = Path(tempfile.mkdtemp(prefix="wandb-client-"))
# Registered before the client is imported, so it runs after the client's own exit handlers.
atexit.register(shutil.rmtree, _CLIENT_HOME, ignore_errors=True)
for _name in (
    "HOME", "TMPDIR", "WANDB_CACHE_DIR", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
    "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
):  # fmt: skip
    (_CLIENT_HOME / _name).mkdir()
    os.environ[_name] = str(_CLIENT_HOME / _name)
os.environ.update(
    WANDB_ERROR_REPORTING="false", WANDB_SILENT="true", NO_PROXY="127.0.0.1,localhost"
)
for _name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "HTTP_PROXY", "HTTPS_PROXY",
              "http_proxy", "https_proxy"):  # fmt: skip
    os.environ.pop(_name, None)
for _name in [name for name in os.environ if name.startswith("TAP_WANDB_")]:
    os.environ.pop(_name)


@pytest.fixture(scope="session")
def demo_data() -> Store:
    """The seeded demo dataset, shared read-only by the tests that do not change it."""
    return demo_store()


@pytest.fixture(scope="session")
def emulator(demo_data: Store) -> Iterator[Emulator]:
    """An emulator serving the demo dataset; tests must not change its data or faults."""
    with Emulator(demo_data) as server:
        yield server


@pytest.fixture
def fresh_emulator() -> Iterator[Emulator]:
    """An emulator with its own copy of the demo dataset, for tests that advance or fault it."""
    with Emulator(demo_store()) as server:
        yield server


@pytest.fixture
def tap_config(emulator: Emulator) -> dict:
    return {"api_key": DEMO_API_KEY, "base_url": emulator.url, "entity": DEMO_USER}


def official_client(url: str, timeout: int = 60):
    """``wandb.Api`` pointed at an emulator.

    The client's sidecar keeps the cache directory it started with, so a scan that must reach
    the server passes ``scan_history(use_cache=False)``.
    """
    import wandb

    os.environ["WANDB_CACHE_DIR"] = tempfile.mkdtemp(dir=_CLIENT_HOME)
    return wandb.Api(
        api_key=DEMO_API_KEY, overrides={"base_url": url, "entity": DEMO_USER}, timeout=timeout
    )


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


@pytest.fixture
def clock(fresh_emulator: Emulator) -> Clock:
    """The fresh emulator's clock, replaced by one the test moves."""
    fresh_emulator.store.clock = clock = Clock()
    return clock
