-- purpose: medication orders with their start date, stop (NULL when unknown or before the start), a canonical code system and compare-form code
-- grain: one row per medication record
-- parameters: none
with default_system as (
    select code_system from meta.code_system_defaults where table_name = 'medications'
)

select
    medications.patient_id,
    medications.start_at as started_at,
    cast(medications.start_at as date) as start_date,
    -- a STOP before START (a Synthea quirk, listed in dq.data_quality_issues) or in the future
    -- is unknown: NULL, so no duration is computed from it
    case
        when medications.stop_at >= medications.start_at
            and cast(medications.stop_at as date) <= current_date + 1
            then medications.stop_at
    end as stopped_at,
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
-- records dated before 1900 or in the future are implausible (kept in raw, listed in
-- dq.data_quality_issues) and left out here: a year-2999 date would move the data extract date
where cast(medications.start_at as date) between date '1900-01-01' and current_date + 1
