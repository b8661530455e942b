-- purpose: each patient's observation: last encounter, and the death date when it falls on/before the extract date
-- grain: one row per patient
-- parameters: none
with last_encounters as (
    select patient_id, max(encounter_date) as last_encounter_date
    from staging.stg_synthea__encounters
    group by patient_id
)

select
    patients.patient_id,
    case when patients.death_date <= extract.data_extract_date then patients.death_date end as death_date,
    last_encounters.last_encounter_date,
    extract.data_extract_date
from staging.stg_synthea__patients as patients
cross join intermediate.int_data_extract_date as extract
left join last_encounters on last_encounters.patient_id = patients.patient_id
