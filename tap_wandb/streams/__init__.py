"""The tap's streams, one module per W&B object: runs and their per-run children, history,
artifacts with their run lineage, system metrics, projects and sweeps."""

from tap_wandb.streams.artifacts import ArtifactsStream, RunArtifactsStream
from tap_wandb.streams.history import HistoryStream
from tap_wandb.streams.projects import ProjectsStream
from tap_wandb.streams.runs import ConfigsStream, RunsStream, SummariesStream
from tap_wandb.streams.sweeps import SweepsStream
from tap_wandb.streams.system_metrics import SystemMetricsStream

__all__ = [
    "ArtifactsStream",
    "ConfigsStream",
    "HistoryStream",
    "ProjectsStream",
    "RunArtifactsStream",
    "RunsStream",
    "SummariesStream",
    "SweepsStream",
    "SystemMetricsStream",
]
