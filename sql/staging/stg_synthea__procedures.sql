-- purpose: procedures with a canonical code system and compare-form code
-- grain: one row per procedure record
-- parameters: none
with default_system as (
    select code_system from meta.code_system_defaults where table_name = 'procedures'
)

select
    procedures.patient_id,
    procedures.start_at as procedure_at,
    cast(procedures.start_at as date) as procedure_date,
    coalesce(
        aliases.code_system,
        nullif(upper(trim(procedures.code_system)), ''),
        default_system.code_system
    ) as code_system,
    upper(replace(trim(procedures.code), '.', '')) as code
from raw.procedures as procedures
left join meta.code_system_aliases as aliases
    on aliases.alias = upper(trim(procedures.code_system))
cross join default_system
-- records dated before 1900 or in the future are implausible (kept in raw, listed in
-- dq.data_quality_issues) and left out here: a year-2999 date would move the data extract date
where cast(procedures.start_at as date) between date '1900-01-01' and current_date + 1
