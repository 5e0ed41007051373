"""tap-wandb: a Singer tap for Weights & Biases."""

__version__ = "0.1.0"
