{#- Where DuckDB and PostgreSQL differ. Models call these and stay one copy for both.
    DuckDB stores JSON as its JSON type (or JSON text); PostgreSQL as jsonb (or json text). -#}

{#- `expr` as the warehouse's JSON type, whether it is stored as JSON or as JSON text. -#}
{% macro as_json(expr) %}{{ return(adapter.dispatch('as_json')(expr)) }}{% endmacro %}
{% macro duckdb__as_json(expr) %}cast({{ expr }} as JSON){% endmacro %}
{% macro postgres__as_json(expr) %}cast({{ expr }} as jsonb){% endmacro %}

{#- A LATERAL item with one row (entry_key, entry_value) per top-level key of the JSON object
    `expr`; entry_value is JSON (SQL NULL for a JSON null). Use:
      from t cross join lateral {{ json_entries('t.blob') }} -#}
{% macro json_entries(expr) %}{{ return(adapter.dispatch('json_entries')(expr)) }}{% endmacro %}
{% macro duckdb__json_entries(expr) -%}
  (select unnest(map_entries(cast({{ as_json(expr) }} as MAP(VARCHAR, JSON))), recursive := true))
    as entries(entry_key, entry_value)
{%- endmacro %}
{% macro postgres__json_entries(expr) -%}
  jsonb_each({{ as_json(expr) }}) as entries(entry_key, entry_value)
{%- endmacro %}

{#- The JSON type of a JSON value: number, string, boolean, object, array or null. -#}
{% macro json_kind(expr) %}{{ return(adapter.dispatch('json_kind')(expr)) }}{% endmacro %}
{% macro duckdb__json_kind(expr) -%}
  case coalesce(json_type({{ expr }}), 'NULL')
    when 'BIGINT' then 'number' when 'UBIGINT' then 'number' when 'DOUBLE' then 'number'
    when 'VARCHAR' then 'string' else lower(coalesce(json_type({{ expr }}), 'NULL'))
  end
{%- endmacro %}
{% macro postgres__json_kind(expr) %}coalesce(jsonb_typeof({{ expr }}), 'null'){% endmacro %}

{#- A JSON number as DOUBLE; NULL for anything else. -#}
{% macro json_number(expr) %}{{ return(adapter.dispatch('json_number')(expr)) }}{% endmacro %}
{% macro duckdb__json_number(expr) -%}
  case when json_type({{ expr }}) in ('BIGINT', 'UBIGINT', 'DOUBLE')
    then cast({{ expr }} as DOUBLE) end
{%- endmacro %}
{% macro postgres__json_number(expr) -%}
  case when jsonb_typeof({{ expr }}) = 'number' then cast({{ expr }} as double precision) end
{%- endmacro %}

{#- The runs' tags as a text array: DuckDB's loader stores them as a JSON array, PostgreSQL's
    as text[]. -#}
{% macro text_array(expr) %}{{ return(adapter.dispatch('text_array')(expr)) }}{% endmacro %}
{% macro duckdb__text_array(expr) %}from_json({{ as_json(expr) }}, '["VARCHAR"]'){% endmacro %}
{% macro postgres__text_array(expr) %}cast({{ expr }} as text[]){% endmacro %}

{#- The first capture group of `pattern` in `expr`, NULL if it does not match. -#}
{% macro regex_group(expr, pattern) %}{{ return(adapter.dispatch('regex_group')(expr, pattern)) }}{% endmacro %}
{% macro duckdb__regex_group(expr, pattern) -%}
  nullif(regexp_extract({{ expr }}, '{{ pattern }}', 1), '')
{%- endmacro %}
{% macro postgres__regex_group(expr, pattern) %}substring({{ expr }} from '{{ pattern }}'){% endmacro %}
