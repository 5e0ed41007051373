"""Commands started under a small launcher that reports the command's own exit code, peak RSS
and CPU time: a process forked from a benchmark (which holds a bench store, duckdb, psycopg or
the emulator at times) would report the benchmark's memory as its own peak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss,
               usage.ru_utime + usage.ru_stime], out)
"""


def start(command: list[str], report: Path, **popen) -> subprocess.Popen:
    """Start ``command`` (its first item an executable path); ``report`` is written at its exit."""
    return subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report), *command], **popen)


def read_report(report: Path) -> tuple[int, float, float]:
    """The command's exit code, peak RSS in MB and CPU seconds (user + system)."""
    status, rss_kb, cpu = json.loads(report.read_text())
    return status, rss_kb / 1024, cpu
