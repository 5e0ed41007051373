{#- The parts of the models that depend on streams tap-wandb does not load yet. Each is one
    SELECT; when the stream exists, replace its body (the comment above each says with what). -#}

{#- One row per sweep: entity, project, sweep_name, metric, goal ('minimize' or 'maximize').
    Today: the sweep names of the runs, each ranked by the `sweep_metrics` var's entry for it,
    else by the `sweep_metric` var (default: loss, minimize); see transform/dbt_project.yml.
    With the sweeps stream, the sweep's own metric (its config's `metric: {name, goal}`):
      select entity, project, sweep_id as sweep_name,
             {{ as_json('config') }} -> 'metric' ->> 'name' as metric,
             coalesce({{ as_json('config') }} -> 'metric' ->> 'goal', 'minimize') as goal
      from {{ source('wandb', 'sweeps') }}
    (and declare `sweeps` in models/sources.yml). -#}
{% macro sweep_objectives() %}
  {%- set default = _object_var('sweep_metric') -%}
  select distinct
    entity,
    project,
    sweep_name,
    {{ _per_sweep('name', default['name']) }} as metric,
    {{ _per_sweep('goal', default.get('goal', 'minimize')) }} as goal
  from {{ source('wandb', 'runs') }}
  where sweep_name is not null and _sdc_deleted_at is null
{% endmacro %}

{#- One row per run: entity, project, run_id, gpu_count, gpu_utilization (mean percent over
    its GPUs). Today: from the run's latest system metrics (runs.system_metrics), whose
    `system.gpu.<i>.*` keys name its GPUs and `system.gpu.<i>.gpu` their utilisation.
    With the system_metrics stream, the utilisation's mean over the whole run: the same
    key patterns over `metrics` of {{ source('wandb', 'system_metrics') }}, grouped by run
    (and declare `system_metrics` in models/sources.yml). -#}
{% macro run_gpus() %}
  select
    runs.entity,
    runs.project,
    runs.run_id,
    count(distinct {{ regex_group('entries.entry_key', '^system\\.gpu\\.([0-9]+)\\.') }})
      as gpu_count,
    avg(case when {{ regex_group('entries.entry_key', '^system\\.gpu\\.[0-9]+\\.(gpu)$') }}
      is not null then {{ json_number('entries.entry_value') }} end) as gpu_utilization
  from {{ source('wandb', 'runs') }} as runs
  cross join lateral {{ json_entries('runs.system_metrics') }}
  where runs._sdc_deleted_at is null
  group by runs.entity, runs.project, runs.run_id
{% endmacro %}

{#- The sweep's `field` from the `sweep_metrics` var, else `default`, as an SQL expression. -#}
{% macro _per_sweep(field, default) -%}
  {%- set per_sweep = _object_var('sweep_metrics') -%}
  {%- if per_sweep -%}
    case sweep_name
    {%- for name, objective in per_sweep.items() %}
      when {{ _sql_text(name) }} then {{ _sql_text(objective.get(field, default)) }}
    {%- endfor %}
      else {{ _sql_text(default) }}
    end
  {%- else -%}
    {{ _sql_text(default) }}
  {%- endif -%}
{%- endmacro %}

{#- A var holding an object: given with --vars it is one; from the environment, YAML text. -#}
{% macro _object_var(name) -%}
  {%- set value = var(name) -%}
  {{ return(fromyaml(value) if value is string else value) }}
{%- endmacro %}

{% macro _sql_text(value) %}'{{ value | string | replace("'", "''") }}'{% endmacro %}
