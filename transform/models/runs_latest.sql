-- One row per run, as of the latest load, with typed columns. The loader upserts runs by key,
-- so the raw table already holds each run's latest record; rows flagged deleted are left out.
select
  entity,
  project,
  run_id,
  storage_id,
  display_name,
  state,
  "user" as username,
  sweep_name,
  "group" as group_name,
  job_type,
  {{ text_array('tags') }} as tags,
  cast(created_at as timestamp) as created_at,
  cast(heartbeat_at as timestamp) as heartbeat_at,
  -- W&B's summary keeps the latest _runtime logged; a run that logged nothing has only
  -- _wandb.runtime (whole seconds).
  coalesce(
    {{ json_number(as_json('summary') ~ " -> '_runtime'") }},
    {{ json_number(as_json('summary') ~ " -> '_wandb' -> 'runtime'") }}
  ) as runtime_seconds,
  cast(history_line_count as bigint) as history_line_count,
  cast(history_last_step as bigint) as history_last_step,
  "commit" as git_commit,
  notes
from {{ source('wandb', 'runs') }}
where _sdc_deleted_at is null
