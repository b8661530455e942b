-- purpose: coded records (diagnoses, encounter reasons, observations, procedures, medications) that belong to a study concept, matched on code system and code (exact or explicit prefix), never on description
-- grain: one row per (source record, concept); record_date is the condition START, or the encounter, observation, procedure or medication start date
-- parameters: none
with records as (
    select patient_id, 'conditions' as source_table, start_date as record_date,
        cast(start_date as timestamp) as recorded_at, stop_date, code_system, code,
        cast(null as decimal(18, 4)) as value_number
    from staging.stg_synthea__conditions
    union all
    select patient_id, 'encounters', encounter_date, encounter_at, null, reason_code_system, reason_code, null
    from staging.stg_synthea__encounters
    where reason_code is not null
    union all
    select patient_id, 'observations', observation_date, observed_at, null, code_system, code, value_number
    from staging.stg_synthea__observations
    union all
    select patient_id, 'procedures', procedure_date, procedure_at, null, code_system, code, null
    from staging.stg_synthea__procedures
    union all
    select patient_id, 'medications', start_date, started_at, null, code_system, code, null
    from staging.stg_synthea__medications
),

value_set_codes as (
    select distinct concept, code_system, code, match from meta.value_sets
)

-- a code never matches one concept twice: value-set files may not list a code their own prefix covers
select records.*, value_set_codes.concept
from records
inner join value_set_codes
    on value_set_codes.code_system = records.code_system
    and (
        value_set_codes.code = records.code
        or (value_set_codes.match = 'prefix' and records.code like value_set_codes.code || '%')
    )
