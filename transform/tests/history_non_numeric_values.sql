-- History values run_metrics leaves out because they are not numbers (media, histograms, text;
-- NaN and Infinity, which the tap writes as null). A warning, not an error: W&B logs them on
-- purpose. The warning's count is the number of values left out; history_coverage says which.
{{ config(severity='warn', fail_calc='coalesce(sum(left_out_values), 0)') }}

select entity, project, run_id, step, left_out_values, left_out
from {{ ref('history_coverage') }}
where left_out_values > 0
