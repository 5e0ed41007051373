"""Pictures from the dbt models in a DuckDB warehouse: the loss curve of every run, and
GPU-hours per project and user. Prints the paths of the PNGs it wrote.

    .venv/bin/python scripts/plot_models.py output/warehouse.duckdb output/
"""

from __future__ import annotations

import argparse
import contextlib
from collections import defaultdict
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

SCHEMA = "analytics"


def plot_losses(con: duckdb.DuckDBPyConnection, path: Path, metric: str = "loss") -> None:
    """One line per run of `metric` against its step (log-scaled: runs differ a hundredfold in
    length), coloured by project; the longest run is named."""
    rows = con.execute(
        f"""SELECT m.entity || '/' || m.project, m.run_id, r.display_name, m.step, m.value
            FROM {SCHEMA}.run_metrics AS m
            JOIN {SCHEMA}.runs_latest AS r USING (entity, project, run_id)
            WHERE m.metric = ? ORDER BY m.entity, m.project, m.run_id, m.step""",
        [metric],
    ).fetchall()
    curves: dict[tuple[str, str, str], tuple[list[int], list[float]]] = defaultdict(
        lambda: ([], [])
    )
    for project, run_id, name, step, value in rows:
        steps, values = curves[(project, run_id, name or run_id)]
        steps.append(step)
        values.append(value)
    projects = sorted({key[0] for key in curves})
    colours = dict(zip(projects, plt.get_cmap("tab10").colors, strict=False))
    longest = max(curves, key=lambda key: len(curves[key][0]), default=None)

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for key, (steps, values) in curves.items():
        named = key == longest
        ax.plot(
            steps, values, color=colours[key[0]], linewidth=1.4 if named else 0.7,
            alpha=0.95 if named else 0.45,
        )  # fmt: skip
        if named:
            ax.annotate(
                key[2], (steps[-1], values[-1]), fontsize=8, xytext=(-4, 6),
                textcoords="offset points", ha="right", color=colours[key[0]],
            )  # fmt: skip
    for project in projects:
        ax.plot([], [], color=colours[project], label=project)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_xlabel("step (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} of {len(curves)} runs (run_metrics)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="project", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_gpu_hours(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """GPU-hours per project, one stacked bar part per user."""
    rows = con.execute(
        f"""SELECT entity || '/' || project, username, sum(gpu_hours)
            FROM {SCHEMA}.gpu_usage GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    projects = sorted({row[0] for row in rows})
    users = sorted({row[1] or "(unknown)" for row in rows})
    hours = {(project, user or "(unknown)"): value for project, user, value in rows}

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    bottom = [0.0] * len(projects)
    for colour, user in zip(plt.get_cmap("tab10").colors, users, strict=False):
        values = [hours.get((project, user), 0.0) for project in projects]
        ax.bar(projects, values, bottom=bottom, label=user, color=colour)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for x, total in enumerate(bottom):
        ax.annotate(f"{total:.2f} h", (x, total), ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("GPU-hours (runtime x GPUs)")
    ax.set_title("GPU-hours per project (gpu_usage)")
    ax.legend(title="user", fontsize=8)
    ax.margins(y=0.12)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("warehouse", type=Path, help="DuckDB file with the dbt models")
    parser.add_argument("directory", type=Path, help="where to write the PNGs")
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    losses = args.directory / "loss_curves.png"
    gpu_hours = args.directory / "gpu_hours.png"
    with contextlib.closing(duckdb.connect(str(args.warehouse), read_only=True)) as con:
        plot_losses(con, losses)
        plot_gpu_hours(con, gpu_hours)
    print(losses)
    print(gpu_hours)


if __name__ == "__main__":
    main()
