"""Datasets, processes, warehouses and checks for bench/e2e.py."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psycopg

from bench.launch import read_report, start
from tap_wandb.emulator import DEMO_API_KEY

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MELTANO = REPO / ".tools" / "meltano" / "bin" / "meltano"
INSTALL_STAMP = REPO / ".meltano" / ".install-stamp"  # the tests and scripts/demo keep it too


@dataclass
class Run:
    """One timed process (or pipe of processes)."""

    seconds: float
    cpu: float  # user + system seconds of the process and its children
    rss: dict[str, float]  # peak resident set per process, MB
    rows: int = 0


@dataclass
class Dataset:
    label: str
    serve: list[str]  # command serving it; the emulator writes its URL to the last argument
    expected: dict[str, int]  # rows per table
    spots: list[tuple[str, str, int, dict]]  # (project, run, step, history row)
    projects: list[str] | None = None

    @classmethod
    def demo(cls) -> Dataset:
        command = [sys.executable, "-m", "tap_wandb.emulator", "--port", "0", "--url-file"]
        return cls("demo entity", command, *_expected([]))

    @classmethod
    def history(cls, runs: int, steps: int) -> Dataset:
        command = [sys.executable, "-m", "tap_wandb.emulator", "--port", "0", "--bench",
                   f"{runs}x{steps}", "--exported-share", "0.8", "--url-file"]  # fmt: skip
        label = f"history, {runs} runs x {steps:,} steps"
        return cls(label, command, *_expected([runs, steps]), projects=["bench"])

    @property
    def expected_rows(self) -> int:
        return sum(self.expected.values())

    def tap_env(self, url: str) -> dict[str, str]:
        env = {"TAP_WANDB_BASE_URL": url, "TAP_WANDB_API_KEY": DEMO_API_KEY}
        if self.projects:
            env["TAP_WANDB_PROJECTS"] = json.dumps(self.projects)
        return env


def _expected(bench: list[int]) -> tuple[dict[str, int], list]:
    """Rows per table and spot history rows (first, middle, last of three runs) of the data the
    emulator serves. Worked out in a child process, so that this one stays small: a process
    started from it would otherwise report this one's memory as its own peak RSS."""
    output = subprocess.run(
        [sys.executable, "-c", _EXPECTED, *map(str, bench)],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    expected, spots = json.loads(output)
    return expected, [tuple(spot) for spot in spots]


_EXPECTED = """
import json, sys
from tap_wandb.emulator import DEMO_USER, bench_store, demo_store
if sys.argv[1:]:  # runs, steps: what `python -m tap_wandb.emulator --bench` serves
    store = bench_store(int(sys.argv[1]), int(sys.argv[2]), exported_share=0.8)
else:  # what `python -m tap_wandb.emulator` serves; the tap reads the key's entity
    store = demo_store()
from tests.test_meltano import expected_counts, expected_top_level  # every stream's rows
runs = [r for r in store.all_runs() if r.entity == DEMO_USER]
expected = {**expected_counts(runs), **expected_top_level(store)}
logged = [r for r in runs if r.history]
spots = [(r.project, r.name, row["_step"], row)
         for r in (logged[0], logged[len(logged) // 2], logged[-1])
         for row in (r.history[0], r.history[len(r.history) // 2], r.history[-1])]
print(json.dumps([expected, spots]))
"""


@contextlib.contextmanager
def serve_dataset(dataset: Dataset) -> Iterator[str]:
    """The emulator for a dataset, in a process of its own; yields its URL."""
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp, "url")
        log = open(Path(tmp, "log"), "wb")  # noqa: SIM115
        process = subprocess.Popen([*dataset.serve, str(url_file)], stdout=log, stderr=log,
                                   cwd=REPO)  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not url_file.exists() or not url_file.read_text():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"emulator did not start: {Path(tmp, 'log').read_text()}")
                time.sleep(0.05)
            yield url_file.read_text()
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


class PostgresServer:
    """A throwaway PostgreSQL server (.ci/postgres.sh: role tap/tap, database warehouse)."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="pg-", dir="/tmp")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dsn = f"host=127.0.0.1 port={self.port} user=tap password=tap dbname=warehouse"

    def __enter__(self) -> PostgresServer:
        os.chmod(self.directory, 0o755)
        script = str(REPO / ".ci" / "postgres.sh")
        subprocess.run([script, "start", self.directory, str(self.port)], check=True, timeout=120)
        return self

    def __exit__(self, *exc) -> None:
        script = str(REPO / ".ci" / "postgres.sh")
        subprocess.run([script, "stop", self.directory], check=False, timeout=120)
        shutil.rmtree(self.directory, ignore_errors=True)


def meltano_env(tmp: Path, pg: PostgresServer) -> dict[str, str]:
    """Meltano offline, with a system directory of its own sharing the installed plugins."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("TAP_WANDB_", "TARGET_", "MELTANO_", "WANDB_"))}  # fmt: skip
    sys_dir = tmp / "meltano-sys"
    sys_dir.mkdir()
    for kind in ("extractors", "loaders"):
        (sys_dir / kind).symlink_to(REPO / ".meltano" / kind, target_is_directory=True)
    (tmp / "empty.env").write_text("")
    env.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_CLI_DISABLE_VERSION_CHECK="true",
        MELTANO_SYS_DIR_ROOT=str(sys_dir),
        UV_PYTHON_DOWNLOADS="never",
        XDG_STATE_HOME=str(tmp / "state"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        NO_COLOR="1",
        BENCH_EMPTY_ENV=str(tmp / "empty.env"),
        TARGET_POSTGRES_PORT=str(pg.port),
        TARGET_POSTGRES_PASSWORD="tap",
    )
    install_plugins(env)
    return env


def install_plugins(env: dict[str, str]) -> None:
    """`meltano install` when meltano.yml or a pyproject.toml changed (as the tests do)."""
    import hashlib

    names = ("meltano.yml", "pyproject.toml", "loader/pyproject.toml")
    want = "".join(f"{hashlib.sha256((REPO / name).read_bytes()).hexdigest()}  {name}\n"
                   for name in names)  # fmt: skip
    if not INSTALL_STAMP.exists() or INSTALL_STAMP.read_text() != want:
        subprocess.run([str(MELTANO), "install"], cwd=REPO, env={**env, "MELTANO_SYS_DIR_ROOT":
                       str(REPO / ".meltano")}, check=True, capture_output=True)  # fmt: skip
        INSTALL_STAMP.write_text(want)


def _finish(process: subprocess.Popen, report: Path) -> tuple[float, float]:
    """Waits; returns CPU seconds (the command's and its children's) and peak RSS in MB."""
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode, rss, _ = read_report(report)
    return usage.ru_utime + usage.ru_stime, rss


def run_process(command: list[str], env: dict[str, str], stdout=None, cwd=None) -> Run:
    """Run a command to completion (its log kept for an error). For `meltano run`, the peak RSS
    is that of the largest process in its tree (the kernel reports the largest reaped child)."""
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp, "log"), "w+b") as log:
        started = time.perf_counter()
        process = start(command, Path(tmp, "rusage"), env=env, cwd=cwd, stdout=stdout or log,
                         stderr=log)  # fmt: skip
        cpu, rss = _finish(process, Path(tmp, "rusage"))
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace")
            raise RuntimeError(f"{command[:4]} exited {process.returncode}:\n{tail}")
    name = Path(command[0]).name
    return Run(seconds, cpu, {"largest" if name == "meltano" else name: rss})


def run_pipe(tap: list[str], loader: list[str], env: dict[str, str]) -> Run:
    """tap | loader, as a shell pipe would run them, without Meltano."""
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp, "log"), "w+b") as log:
        reports = Path(tmp, "tap-rusage"), Path(tmp, "loader-rusage")
        started = time.perf_counter()
        first = start(tap, reports[0], env=env, stdout=subprocess.PIPE, stderr=log)
        second = start(loader, reports[1], env=env, stdin=first.stdout,
                        stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
        first.stdout.close()
        tap_cpu, tap_rss = _finish(first, reports[0])
        loader_cpu, loader_rss = _finish(second, reports[1])
        seconds = time.perf_counter() - started
        if first.returncode or second.returncode:
            log.seek(0)
            raise RuntimeError(f"pipe failed:\n{log.read()[-4000:].decode(errors='replace')}")
    return Run(seconds, tap_cpu + loader_cpu,
               {"tap": tap_rss, Path(loader[0]).name: loader_rss})  # fmt: skip


def _same_number(got, want) -> bool:
    if isinstance(want, float) and not math.isfinite(want):
        return got is None  # the tap writes strict JSON: NaN and infinities become null
    if isinstance(want, int | float) and isinstance(got, int | float):
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=0.0)
    return got == want


def check_landed(loader: str, env: dict[str, str], dataset: Dataset, pg: PostgresServer) -> int:
    """Every table's row count equals the emulator's, and spot history rows hold the logged
    values; then the tables are dropped. Returns the rows landed."""
    spot = "SELECT metrics FROM {}.history WHERE project = {p} AND run_id = {p} AND step = {p}"
    if loader in ("target-duckdb", "target-wandb-duckdb"):
        path = env["TARGET_WANDB_DUCKDB_PATH" if loader == "target-wandb-duckdb" else
                   "TARGET_DUCKDB_PATH"]  # fmt: skip
        with contextlib.closing(duckdb.connect(path, read_only=True)) as con:
            counts, found = _read_back(con, "wandb", spot.format("wandb", p="?"), dataset)
        os.unlink(path)
        found = [json.loads(metrics) if metrics else None for metrics in found]
    else:
        schema = env["TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA"]
        with psycopg.connect(pg.dsn, autocommit=True) as con:
            counts, found = _read_back(con, schema, spot.format(schema, p="%s"), dataset)
            con.execute(f"DROP SCHEMA {schema} CASCADE")
    if counts != dataset.expected:
        raise AssertionError(f"{loader} landed {counts}, the emulator holds {dataset.expected}")
    for (_, run, step, row), metrics in zip(dataset.spots, found, strict=True):
        want = {key: value for key, value in row.items() if key != "_step"}
        if (
            metrics is None
            or metrics.keys() != want.keys()
            or not all(_same_number(metrics[key], value) for key, value in want.items())
        ):
            raise AssertionError(f"{loader}: run {run} step {step} landed {metrics}, not {want}")
    return sum(counts.values())


def _read_back(con, schema: str, spot: str, dataset: Dataset) -> tuple[dict[str, int], list]:
    counts = {}
    for table in dataset.expected:
        try:
            counts[table] = con.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0]
        except (duckdb.CatalogException, psycopg.errors.UndefinedTable):
            counts[table] = 0  # a stream without records: some loaders create no table
    found = []
    for project, run, step, _ in dataset.spots:
        row = con.execute(spot, [project, run, step]).fetchone()
        found.append(row[0] if row else None)
    return counts, found
