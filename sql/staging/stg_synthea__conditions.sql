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
    conditions.stop_date,
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
