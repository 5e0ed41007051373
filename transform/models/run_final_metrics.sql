-- Each run's final metrics: the numbers of its summary, one typed row per key. Read from the
-- run's latest whole summary (runs.summary) rather than the keyed `summaries` table, where a
-- key removed from a run's summary would linger.
select
  runs.entity,
  runs.project,
  runs.run_id,
  entries.entry_key as metric,
  {{ json_number('entries.entry_value') }} as value
from {{ source('wandb', 'runs') }} as runs
cross join lateral {{ json_entries('runs.summary') }}
where runs._sdc_deleted_at is null
  and {{ json_kind('entries.entry_value') }} = 'number'
