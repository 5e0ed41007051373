"""The tap's streams, one module per W&B object: runs and their per-run children, history."""

from tap_wandb.streams.history import HistoryStream
from tap_wandb.streams.runs import ConfigsStream, RunsStream, SummariesStream

__all__ = ["ConfigsStream", "HistoryStream", "RunsStream", "SummariesStream"]
