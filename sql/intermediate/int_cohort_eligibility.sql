-- purpose: each incident episode with every inclusion and exclusion criterion of PROTOCOL 3 evaluated
-- grain: one row per incident episode (patient_id, index_date)
-- parameters: $min_age, $sexes, $lookback_days
with episodes as (
    select
        episodes.patient_id,
        episodes.index_date,
        patients.sex,
        patients.death_date,
        -- completed years: subtract one when the birthday has not yet come round in the index
        -- year (BIGINT on both engines: Spark's year() arithmetic is INT, DuckDB's BIGINT)
        cast(
            year(episodes.index_date) - year(patients.birth_date)
            - case
                when month(episodes.index_date) * 100 + day(episodes.index_date)
                    < month(patients.birth_date) * 100 + day(patients.birth_date) then 1
                else 0
            end as bigint
        ) as age_at_index
    from intermediate.int_back_pain_episodes_incident as episodes
    inner join staging.stg_synthea__patients as patients on patients.patient_id = episodes.patient_id
),

first_encounters as (
    select patient_id, min(encounter_date) as first_encounter_date
    from staging.stg_synthea__encounters
    group by patient_id
),

prevalent_metastasis as (
    -- a bone-metastasis diagnosis on or before the index date makes the outcome prevalent
    select distinct episodes.patient_id, episodes.index_date
    from episodes
    inner join intermediate.int_concept_records as records
        on records.patient_id = episodes.patient_id
        and records.concept = 'bone_metastasis'
        and records.source_table in ('conditions', 'encounters')
        and records.record_date <= episodes.index_date
),

criteria as (
    select
        episodes.*,
        coalesce(episodes.age_at_index >= $min_age, false) as meets_min_age,
        coalesce(list_contains($sexes, episodes.sex), false) as meets_sex,
        coalesce(first_encounters.first_encounter_date <= episodes.index_date - $lookback_days, false) as meets_lookback,
        episodes.death_date is null or episodes.death_date >= episodes.index_date as is_alive_at_index,
        prevalent_metastasis.patient_id is null as has_no_prevalent_metastasis
    from episodes
    left join first_encounters on first_encounters.patient_id = episodes.patient_id
    left join prevalent_metastasis
        on prevalent_metastasis.patient_id = episodes.patient_id
        and prevalent_metastasis.index_date = episodes.index_date
)

select
    *,
    meets_min_age and meets_sex and meets_lookback and is_alive_at_index and has_no_prevalent_metastasis as is_eligible
from criteria
