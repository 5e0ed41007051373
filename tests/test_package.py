"""The package as users get it: a plain install (no extras) works, and every import is declared."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER
from tests.conftest import ORIGINAL_ENVIRON

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory) -> Path:
    """A venv with only `pip install tap-wandb` from this tree (packages from uv's cache)."""
    uv = Path(sys.executable).with_name("uv")
    assert uv.exists(), f"{uv} missing: run scripts/setup"
    venv = tmp_path_factory.mktemp("plain") / "venv"
    for command in (
        [uv, "venv", "-q", "--python", sys.executable, venv],
        [uv, "pip", "install", "-q", "--offline", "--python", venv / "bin" / "python", REPO],
    ):
        subprocess.run(command, check=True, timeout=600, env=ORIGINAL_ENVIRON)
    return venv


def _installed_commands(venv: Path) -> list[str]:
    code = (
        "import json; from importlib.metadata import distribution; "
        "print(json.dumps([e.name for e in distribution('tap-wandb').entry_points "
        "if e.group == 'console_scripts']))"
    )
    found = subprocess.run(
        [venv / "bin" / "python", "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(found.stdout)


def test_every_command_of_a_plain_install_works(plain_install, emulator):
    python = plain_install / "bin" / "python"
    no_graphql = subprocess.run([python, "-c", "import graphql"], capture_output=True)
    assert no_graphql.returncode != 0  # the emulator's extra is not installed
    commands = _installed_commands(plain_install)
    assert "tap-wandb" in commands
    for command in commands:
        shown = subprocess.run(
            [plain_install / "bin" / command, "--help"], capture_output=True, text=True, timeout=120
        )
        assert shown.returncode == 0, (command, shown.stderr[-2000:])
    # And the tap syncs.
    config = plain_install.parent / "config.json"
    config.write_text(
        json.dumps(
            {
                "api_key": DEMO_API_KEY,
                "base_url": emulator.url,
                "entity": DEMO_USER,
                "projects": ["vision"],
            }
        )
    )
    synced = subprocess.run(
        [plain_install / "bin" / "tap-wandb", "--config", config],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert synced.returncode == 0, synced.stderr[-3000:]
    runs = [line for line in synced.stdout.splitlines() if '"stream":"runs"' in line]
    history = [line for line in synced.stdout.splitlines() if '"stream":"history"' in line]
    assert len(runs) > 1 and len(history) > 1


def test_the_license_is_declared_and_shipped(plain_install):
    code = (
        "from importlib.metadata import distribution; d = distribution('tap-wandb'); "
        "print(d.metadata['License-Expression']); "
        "print(next(f for f in d.files if f.name == 'LICENSE').read_text())"
    )
    shown = subprocess.run(
        [plain_install / "bin" / "python", "-c", code], capture_output=True, text=True, check=True
    )
    expression, text = shown.stdout.split("\n", 1)
    assert expression == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a notice


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalized (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported(*patterns: str) -> set[str]:
    """Top-level modules imported by the Python files matching ``patterns`` (under REPO)."""
    found: set[str] = set()
    for path in {path for pattern in patterns for path in REPO.glob(pattern)}:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"tap_wandb", "tests", "bench", "__future__"}


@pytest.mark.parametrize(
    ("patterns", "extras"),
    [
        (("tap_wandb/*.py", "tap_wandb/streams/*.py"), ()),  # the tap itself: a plain install
        (("tap_wandb/emulator/**/*.py",), ("emulator",)),
        (("tests/**/*.py", "bench/**/*.py"), ("emulator", "test")),
    ],
    ids=["tap", "emulator", "tests-and-bench"],
)
def test_every_imported_package_is_declared(patterns, extras):
    declared = {_name(r) for r in PROJECT["dependencies"]}
    for extra in extras:
        declared |= {_name(r) for r in PROJECT["optional-dependencies"][extra]}
    providers = packages_distributions()
    imported = _imported(*patterns)
    assert imported, patterns
    undeclared = {
        module: providers.get(module, [])
        for module in imported
        if not {_name(dist) for dist in providers.get(module, [])} & declared
    }
    assert undeclared == {}


def test_the_loader_declares_every_import_pinned():
    """loader/ (target-wandb-duckdb) is a distribution of its own, installed by Meltano."""
    loader = tomllib.loads((REPO / "loader" / "pyproject.toml").read_text())["project"]
    assert all("==" in requirement for requirement in loader["dependencies"])
    declared = {_name(r) for r in loader["dependencies"]}
    providers = packages_distributions()
    imported = _imported("loader/target_wandb_duckdb/*.py") - {"target_wandb_duckdb"}
    assert imported
    undeclared = {m for m in imported if not {_name(d) for d in providers.get(m, [])} & declared}
    assert undeclared == set()
    # The DuckDB the tests and dbt-duckdb use: one file format for all of them.
    assert "duckdb==1.2.2" in loader["dependencies"]
    assert "duckdb==1.2.2" in PROJECT["optional-dependencies"]["test"]
