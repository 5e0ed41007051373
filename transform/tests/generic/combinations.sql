{#- Keys of several columns, which dbt's built-in unique and relationships tests cannot take. -#}

{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as copies
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}

{% test relationships_combination(model, to, columns) %}
select {% for c in columns %}child.{{ c }}{{ ", " if not loop.last }}{% endfor %}
from {{ model }} as child
where not exists (
  select 1 from {{ to }} as parent
  where {% for c in columns %}parent.{{ c }} = child.{{ c }}{{ " and " if not loop.last }}{% endfor %}
)
{% endtest %}
