"""The tap's streams, one module per W&B object: runs and their per-run children, history,
projects and sweeps."""

from tap_wandb.streams.history import HistoryStream
from tap_wandb.streams.projects import ProjectsStream
from tap_wandb.streams.runs import ConfigsStream, RunsStream, SummariesStream
from tap_wandb.streams.sweeps import SweepsStream

__all__ = [
    "ConfigsStream",
    "HistoryStream",
    "ProjectsStream",
    "RunsStream",
    "SummariesStream",
    "SweepsStream",
]
