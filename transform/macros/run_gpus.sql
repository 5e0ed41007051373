{#- One row per live run: entity, project, run_id, gpu_count, gpu_utilization (mean percent).
    From the run's rows in `system_metrics` (W&B's sample over the whole run, loaded once the
    run has ended): gpu_count is the number of distinct <i> in `system.gpu.<i>.*` keys, and
    gpu_utilization the mean of all `system.gpu.<i>.gpu` values. A run without such rows (still
    running, or its rows not loaded) falls back to its latest sample, runs.system_metrics, read
    the same way, so that runs in progress count their GPUs too. -#}
{% macro run_gpus() %}
  with live_runs as (
    select entity, project, run_id, system_metrics
    from {{ source('wandb', 'runs') }}
    where _sdc_deleted_at is null
  ),

  sampled as (
    {{ _gpus_of_entries(source('wandb', 'system_metrics'), 'metrics') }}
  ),

  latest as (
    {{ _gpus_of_entries('live_runs', 'system_metrics') }}
  )

  select
    live_runs.entity,
    live_runs.project,
    live_runs.run_id,
    case when sampled.run_id is not null then sampled.gpu_count else latest.gpu_count end
      as gpu_count,
    case when sampled.run_id is not null then sampled.gpu_utilization
      else latest.gpu_utilization end as gpu_utilization
  from live_runs
  left join sampled
    on sampled.entity = live_runs.entity
    and sampled.project = live_runs.project
    and sampled.run_id = live_runs.run_id
  left join latest
    on latest.entity = live_runs.entity
    and latest.project = live_runs.project
    and latest.run_id = live_runs.run_id
{% endmacro %}

{#- Per run of `relation`, its GPU count and mean utilisation over the keys of the JSON
    objects in column `column`. -#}
{% macro _gpus_of_entries(relation, column) %}
  select
    src.entity,
    src.project,
    src.run_id,
    count(distinct {{ regex_group('entries.entry_key', '^system\\.gpu\\.([0-9]+)\\.') }})
      as gpu_count,
    avg(case when {{ regex_group('entries.entry_key', '^system\\.gpu\\.[0-9]+\\.(gpu)$') }}
      is not null then {{ json_number('entries.entry_value') }} end) as gpu_utilization
  from {{ relation }} as src
  cross join lateral {{ json_entries('src.' ~ column) }}
  group by src.entity, src.project, src.run_id
{% endmacro %}
