"""Run tap-wandb as a user does (its CLI, in a subprocess) and read what it wrote."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator

STREAM_KEYS = {
    "runs": ("entity", "project", "run_id"),
    "configs": ("entity", "project", "run_id", "key"),
    "summaries": ("entity", "project", "run_id", "key"),
    "history": ("entity", "project", "run_id", "step"),
}

# The demo projects with runs: every one with artifacts and system metrics too.
DEMO_PROJECTS = ("vision", "nlp", "acme-research/shared")


def demo_projects_config(emulator: Emulator, **extra: Any) -> dict[str, Any]:
    """Settings that read every demo project with runs, history off (for the streams beside
    it); ``extra`` settings added or overridden."""
    return {
        "api_key": DEMO_API_KEY,
        "base_url": emulator.url,
        "entity": DEMO_USER,
        "projects": list(DEMO_PROJECTS),
        "history_mode": "off",
        **extra,
    }


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-strict JSON token {token}")


def strict_loads(line: str) -> Any:
    """json.loads that refuses NaN/Infinity, as strict JSON consumers do."""
    return json.loads(line, parse_constant=_reject_constant)


@dataclass
class TapRun:
    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def records(self, stream: str) -> list[dict[str, Any]]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def by_stream(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for message in self.messages:
            if message["type"] == "RECORD":
                found[message["stream"]].append(message["record"])
        return found

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict[str, Any]:
        return self.states[-1]


def run_tap(
    config: dict[str, Any],
    *,
    state: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    check: bool = True,
) -> TapRun:
    """Run ``tap-wandb --config ...``; every stdout line must be strict JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "tap_wandb.tap"]
        config_path = Path(tmp, "config.json")
        config_path.write_text(json.dumps(config))
        command += ["--config", str(config_path)]
        if state is not None:
            Path(tmp, "state.json").write_text(json.dumps(state))
            command += ["--state", str(Path(tmp, "state.json"))]
        if catalog is not None:
            Path(tmp, "catalog.json").write_text(json.dumps(catalog))
            command += ["--catalog", str(Path(tmp, "catalog.json"))]
        command += args or []
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
    run = TapRun(result.returncode, result.stdout, result.stderr)
    if not (args and any(a in ("--about", "--discover") for a in args)):
        run.messages = [strict_loads(line) for line in result.stdout.splitlines() if line.strip()]
    if check and result.returncode != 0:
        raise AssertionError(f"tap failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return run


def discover(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(run_tap(config, args=["--discover"]).stdout)


def select_streams(catalog: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """A catalog with only ``names`` selected (and their properties)."""
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in names
    return catalog


def finite(value: Any) -> Any:
    """The oracle's values as the tap must write them: NaN/Infinity -> None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def numbers_equal(left: Any, right: Any) -> bool:
    """Deep equality that compares numbers numerically (1 == 1.0), as W&B re-encodes them."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(numbers_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(numbers_equal, left, right))
    return left == right
