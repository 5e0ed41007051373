-- GPU-hours and mean GPU utilisation per project, user and month (of the run's start):
-- runtime × GPU count, and the utilisation weighted by each run's GPU-hours. GPUs per run
-- come from macro run_gpus (its system_metrics rows, else its latest sample); a run's whole
-- runtime counts in the month it started.
with runs as (
  select
    runs.entity,
    runs.project,
    runs.username,
    cast(date_trunc('month', runs.created_at) as date) as month,
    coalesce(runs.runtime_seconds, 0) as runtime_seconds,
    coalesce(gpus.gpu_count, 0) as gpu_count,
    gpus.gpu_utilization
  from {{ ref('runs_latest') }} as runs
  left join ({{ run_gpus() }}) as gpus
    on gpus.entity = runs.entity
    and gpus.project = runs.project
    and gpus.run_id = runs.run_id
)

select
  entity,
  project,
  username,
  month,
  count(*) as runs,
  cast(sum(case when gpu_count > 0 then 1 else 0 end) as bigint) as gpu_runs,
  sum(runtime_seconds) / 3600.0 as run_hours,
  sum(runtime_seconds * gpu_count) / 3600.0 as gpu_hours,
  sum(runtime_seconds * gpu_count * gpu_utilization)
    / nullif(sum(case when gpu_utilization is not null then runtime_seconds * gpu_count end), 0)
    as mean_gpu_utilization
from runs
group by entity, project, username, month
