-- One row per history row: how many of its values run_metrics holds and which it leaves out
-- because they are not numbers. The test history_non_numeric_values warns with their count.
-- Incremental like run_metrics (macro history_to_process); every history row has a row here,
-- so the next build knows where to start even when no value was left out.
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
),

entries as (
  select
    history.entity,
    history.project,
    history.run_id,
    history.step,
    history.loaded_at,
    entries.entry_key as metric,
    {{ json_kind('entries.entry_value') }} as json_kind
  from history
  left join lateral {{ json_entries('history.metrics') }} on true
)

select
  entity,
  project,
  run_id,
  step,
  loaded_at,
  count(metric) as metric_values,
  count(case when json_kind = 'number' then 1 end) as numeric_values,
  count(case when json_kind <> 'number' then 1 end) as left_out_values,
  string_agg(case when json_kind <> 'number' then metric || ' (' || json_kind || ')' end, ', '
    order by metric) as left_out
from entries
group by entity, project, run_id, step, loaded_at
