{#- The history rows an incremental model still has to process: every row on a full build,
    else the rows loaded after the newest one the model holds (loaded_at, the loader's
    _sdc_batched_at). A row the loader wrote again (a resumed run read again, a retried load)
    is newer, so it is processed again and replaces the model's rows of its step. -#}
{% macro history_to_process() %}
  select entity, project, run_id, cast(step as bigint) as step, metrics,
    cast(_sdc_batched_at as timestamp) as loaded_at
  from {{ source('wandb', 'history') }}
  where _sdc_deleted_at is null
  {% if is_incremental() %}
    and _sdc_batched_at > (
      select coalesce(max(loaded_at), cast('1970-01-01' as timestamp)) from {{ this }}
    )
  {% endif %}
{% endmacro %}
