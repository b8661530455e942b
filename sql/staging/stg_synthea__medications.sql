-- purpose: medication orders with their start date, a canonical code system and compare-form code
-- grain: one row per medication record
-- parameters: none
with default_system as (
    select code_system from meta.code_system_defaults where table_name = 'medications'
)

select
    medications.patient_id,
    medications.start_at as started_at,
    cast(medications.start_at as date) as start_date,
    coalesce(
        aliases.code_system,
        nullif(upper(trim(medications.code_system)), ''),
        default_system.code_system
    ) as code_system,
    upper(replace(trim(medications.code), '.', '')) as code
from raw.medications as medications
left join meta.code_system_aliases as aliases
    on aliases.alias = upper(trim(medications.code_system))
cross join default_system
