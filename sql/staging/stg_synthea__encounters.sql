-- purpose: encounters with their date and reason code (Synthea has no reason SYSTEM column: default system)
-- grain: one row per encounter
-- parameters: none
with default_system as (
    select code_system from meta.code_system_defaults where table_name = 'encounters'
)

select
    encounters.encounter_id,
    encounters.patient_id,
    encounters.start_at as encounter_at,
    cast(encounters.start_at as date) as encounter_date,
    encounters.encounter_class,
    default_system.code_system as reason_code_system,
    nullif(upper(replace(trim(encounters.reason_code), '.', '')), '') as reason_code
from raw.encounters as encounters
cross join default_system
-- records dated before 1900 or in the future are implausible (kept in raw, listed in
-- dq.data_quality_issues) and left out here: a year-2999 date would move the data extract date
where cast(encounters.start_at as date) between date '1900-01-01' and current_date + 1
