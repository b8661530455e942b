-- purpose: conditions with a canonical code system and codes in compare form (upper case, no dots)
-- grain: one row per condition record
-- parameters: none
with default_system as (
    select code_system from meta.code_system_defaults where table_name = 'conditions'
)

select
    conditions.patient_id,
    conditions.encounter_id,
    conditions.start_date,
    -- a STOP before START (listed in dq.data_quality_issues): the record ends the day it starts,
    -- so it cannot support persistent pain (NULL would read as still active)
    case
        when conditions.stop_date < conditions.start_date then conditions.start_date
        else conditions.stop_date
    end as stop_date,
    coalesce(
        aliases.code_system,
        nullif(upper(trim(conditions.code_system)), ''),
        default_system.code_system
    ) as code_system,
    upper(replace(trim(conditions.code), '.', '')) as code
from raw.conditions as conditions
left join meta.code_system_aliases as aliases
    on aliases.alias = upper(trim(conditions.code_system))
cross join default_system
-- records dated before 1900 or in the future are implausible (kept in raw, listed in
-- dq.data_quality_issues) and left out here: a year-2999 date would move the data extract date
where conditions.start_date between date '1900-01-01' and current_date + 1
