"""tap-wandb: a Singer tap for Weights & Biases."""
