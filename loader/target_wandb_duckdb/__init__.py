"""target-wandb-duckdb: a Singer loader into DuckDB, built for tap-wandb's volume of history."""

__version__ = "0.1.0"
