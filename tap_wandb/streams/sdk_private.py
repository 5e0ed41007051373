"""The only place where tap-wandb leans on Singer SDK internals (pinned to singer-sdk 0.54).

Each use says why no public hook does the job; tests/test_sdk_private.py fails if an SDK
upgrade changes what they rely on.
"""

from __future__ import annotations

from singer_sdk import Stream
from singer_sdk.mapper import SameRecordTransform


class SchemaOnce(Stream):
    """A child stream that writes its SCHEMA once per sync.

    The SDK writes SCHEMA at the start of every child context, i.e. once per run: 5,000 runs
    gave 15,000 SCHEMA messages, and targets flush a batch at each (meltano/sdk#1061). No
    public hook decides this, so ``_write_schema_message`` is overridden.
    """

    _schema_written = False

    def _write_schema_message(self) -> None:
        if not self._schema_written:
            super()._write_schema_message()
            self._schema_written = True


def records_pass_unchanged(stream: Stream) -> bool:
    """Whether the SDK's per-record path would leave this stream's records as they are: no
    stream map or flattening, every property selected, no BATCH files, no dry-run limit.

    History records may then be written straight to the output (the per-record path costs
    more than reading them). These are the conditions of the SDK's record pipeline as of
    0.54 (``_sync_records`` → ``_generate_record_messages``); a step added there would make
    this answer wrong, which the tests check by comparing both paths' output.
    """
    maps = stream.stream_maps
    return (
        len(maps) == 1
        and type(maps[0]) is SameRecordTransform
        and not maps[0].flattening_enabled
        and all(stream.mask.values())
        and not stream.get_batch_config(stream.config)
        and stream.ABORT_AT_RECORD_COUNT is None
    )
