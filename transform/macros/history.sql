{#- The history rows an incremental model still has to process: every row on a full build,
    else the rows loaded after the newest one the model holds (loaded_at, the loader's
    _sdc_batched_at). A row the loader wrote again (a resumed run read again, a retried load)
    is newer, so it is processed again and replaces the model's rows of its step.
    Rows of runs no longer live (deleted in W&B: their `runs` row is gone with hard_delete,
    or flagged with _sdc_deleted_at) are left out; drop_rows_of_deleted_runs removes the ones
    a model took in before the run was deleted. -#}
{% macro history_to_process() %}
  select entity, project, run_id, cast(step as bigint) as step, metrics,
    cast(_sdc_batched_at as timestamp) as loaded_at
  from {{ source('wandb', 'history') }} as history
  where _sdc_deleted_at is null
    and {{ _run_is_live('history') }}
  {% if is_incremental() %}
    and _sdc_batched_at > (
      select coalesce(max(loaded_at), cast('1970-01-01' as timestamp)) from {{ this }}
    )
  {% endif %}
{% endmacro %}

{#- A post-hook of the incremental models: delete their rows of runs deleted since. -#}
{% macro drop_rows_of_deleted_runs() %}
  delete from {{ this }} as model where not {{ _run_is_live('model') }}
{% endmacro %}

{#- Whether the run of the row `alias` is live: in `runs` and not flagged deleted. -#}
{% macro _run_is_live(alias) -%}
  exists (
    select 1 from {{ source('wandb', 'runs') }} as runs
    where runs._sdc_deleted_at is null
      and runs.entity = {{ alias }}.entity
      and runs.project = {{ alias }}.project
      and runs.run_id = {{ alias }}.run_id
  )
{%- endmacro %}
