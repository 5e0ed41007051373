{#- One row per sweep that live runs name: entity, project, sweep_name, metric, goal
    ('minimize' or 'maximize'). The metric is, first found:
    1. the `sweep_metrics` var's entry for the sweep name (an override: rank a sweep by another
       metric than the one it optimised);
    2. the sweep's own config, `metric: {name, goal}` (sweeps.sweep_id is runs.sweep_name);
       goal defaults to minimize, as in W&B;
    3. the `sweep_metric` var (default loss, minimize), for sweeps whose config names no
       metric (grid and random sweeps need none) or that the sweeps table lacks.
    See transform/dbt_project.yml for the vars. -#}
{% macro sweep_objectives() %}
  {%- set default = _object_var('sweep_metric') -%}
  with run_sweeps as (
    select distinct entity, project, sweep_name
    from {{ source('wandb', 'runs') }}
    where sweep_name is not null and _sdc_deleted_at is null
  ),

  configured as (
    select
      entity,
      project,
      sweep_id,
      {{ as_json('config') }} -> 'metric' ->> 'name' as metric,
      {{ as_json('config') }} -> 'metric' ->> 'goal' as goal
    from {{ source('wandb', 'sweeps') }}
    where _sdc_deleted_at is null
  ),

  candidates as (
    select
      run_sweeps.entity,
      run_sweeps.project,
      run_sweeps.sweep_name,
      {{ _per_sweep('run_sweeps.sweep_name', 'name') }} as override_metric,
      {{ _per_sweep('run_sweeps.sweep_name', 'goal') }} as override_goal,
      configured.metric as config_metric,
      configured.goal as config_goal
    from run_sweeps
    left join configured
      on configured.entity = run_sweeps.entity
      and configured.project = run_sweeps.project
      and configured.sweep_id = run_sweeps.sweep_name
  )

  select
    entity,
    project,
    sweep_name,
    coalesce(override_metric, config_metric, {{ _sql_text(default['name']) }}) as metric,
    case
      when override_metric is not null then coalesce(override_goal, 'minimize')
      when config_metric is not null then coalesce(config_goal, 'minimize')
      else {{ _sql_text(default.get('goal', 'minimize')) }}
    end as goal
  from candidates
{% endmacro %}

{#- The `sweep_metrics` var's `field` for the sweep named by `sweep_name`, as an SQL
    expression; NULL for a sweep without an entry. -#}
{% macro _per_sweep(sweep_name, field) -%}
  {%- set per_sweep = _object_var('sweep_metrics') -%}
  {%- if per_sweep -%}
    case {{ sweep_name }}
    {%- for name, objective in per_sweep.items() %}
      when {{ _sql_text(name) }} then {{ _sql_text(objective[field]) if objective.get(field) else 'null' }}
    {%- endfor %}
    end
  {%- else -%}
    cast(null as {{ dbt.type_string() }})
  {%- endif -%}
{%- endmacro %}

{#- A var holding an object: given with --vars it is one; from the environment, YAML text. -#}
{% macro _object_var(name) -%}
  {%- set value = var(name) -%}
  {{ return(fromyaml(value) if value is string else value) }}
{%- endmacro %}

{% macro _sql_text(value) %}'{{ value | string | replace("'", "''") }}'{% endmacro %}
