-- One row per numeric history value (metric, value as DOUBLE), the long form BI tools chart
-- without JSON functions. _runtime and _timestamp are rows too. Non-numeric values (media,
-- histograms, text; NaN and Infinity, which arrive as null) are left out and counted in
-- history_coverage, whose test warns with their number.
-- Incremental on the load: see macro history_to_process.
{{
  config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['entity', 'project', 'run_id', 'step'],
    post_hook="{{ drop_rows_of_deleted_runs() }}",
  )
}}

with history as (
  {{ history_to_process() }}
)

select
  history.entity,
  history.project,
  history.run_id,
  history.step,
  entries.entry_key as metric,
  {{ json_number('entries.entry_value') }} as value,
  history.loaded_at
from history
cross join lateral {{ json_entries('history.metrics') }}
where {{ json_kind('entries.entry_value') }} = 'number'
