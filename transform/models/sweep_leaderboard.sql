-- The runs of each sweep, best first by the sweep's metric and goal (its config's, or the
-- settings'; macro sweep_objectives), with the run's summary value of that metric and its
-- config. Runs without a value rank last.
with objectives as (
  {{ sweep_objectives() }}
),

sweep_runs as (
  select
    runs.entity,
    runs.project,
    runs.sweep_name,
    runs.run_id,
    runs.display_name,
    runs.state,
    runs.created_at,
    objectives.metric,
    objectives.goal,
    final.value
  from {{ ref('runs_latest') }} as runs
  inner join objectives
    on objectives.entity = runs.entity
    and objectives.project = runs.project
    and objectives.sweep_name = runs.sweep_name
  left join {{ ref('run_final_metrics') }} as final
    on final.entity = runs.entity
    and final.project = runs.project
    and final.run_id = runs.run_id
    and final.metric = objectives.metric
)

select
  sweep_runs.entity,
  sweep_runs.project,
  sweep_runs.sweep_name,
  sweep_runs.metric,
  sweep_runs.goal,
  row_number() over (
    partition by sweep_runs.entity, sweep_runs.project, sweep_runs.sweep_name
    order by
      case when sweep_runs.goal = 'maximize' then -sweep_runs.value else sweep_runs.value end
        asc nulls last,
      sweep_runs.created_at,
      sweep_runs.run_id
  ) as rank,
  sweep_runs.value,
  sweep_runs.run_id,
  sweep_runs.display_name,
  sweep_runs.state,
  {{ as_json('raw.config') }} as config
from sweep_runs
inner join {{ source('wandb', 'runs') }} as raw
  on raw.entity = sweep_runs.entity
  and raw.project = sweep_runs.project
  and raw.run_id = sweep_runs.run_id
