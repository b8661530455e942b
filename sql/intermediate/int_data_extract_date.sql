-- purpose: the data extract date: the configured one, else the latest record or death date in the export (STOP dates excluded)
-- grain: one row
-- parameters: $data_extract_date
with latest_dates as (
    select max(start_date) as latest_date from staging.stg_synthea__conditions
    union all
    select max(encounter_date) from staging.stg_synthea__encounters
    union all
    select max(observation_date) from staging.stg_synthea__observations
    union all
    select max(procedure_date) from staging.stg_synthea__procedures
    union all
    select max(start_date) from staging.stg_synthea__medications
    union all
    select max(study_date) from staging.stg_synthea__imaging_studies
    union all
    select max(death_date) from staging.stg_synthea__patients
)

select coalesce(cast($data_extract_date as date), max(latest_date)) as data_extract_date
from latest_dates
