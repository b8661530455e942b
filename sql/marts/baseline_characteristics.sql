-- purpose: baseline characteristics of each cohort episode at index, for Table 1 (PROTOCOL 6.6): age and band, sex, red flags, encounters in the look-back year, prior other cancer, osteoporosis, prior vertebral fracture, and the groups Table 1 compares
-- grain: one row per cohort episode (patient_id, index_date)
-- parameters: $lookback_days
with encounters_before as (
    -- contacts in the look-back year, the index day excluded (the index visit is everyone's)
    select cohort.patient_id, cohort.index_date, count(*) as n_encounters
    from mart.cohort as cohort
    inner join staging.stg_synthea__encounters as encounters
        on encounters.patient_id = cohort.patient_id
        and encounters.encounter_date >= cohort.index_date - $lookback_days
        and encounters.encounter_date < cohort.index_date
    group by cohort.patient_id, cohort.index_date
),

history as (
    -- a condition recorded on or before the index date is present at index
    select
        cohort.patient_id,
        cohort.index_date,
        bool_or(records.concept = 'other_cancer') as has_prior_other_cancer,
        bool_or(records.concept = 'osteoporosis') as has_osteoporosis,
        bool_or(records.concept = 'vertebral_fracture') as has_prior_vertebral_fracture
    from mart.cohort as cohort
    inner join intermediate.int_concept_records as records
        on records.patient_id = cohort.patient_id
        and records.record_date <= cohort.index_date
        and records.source_table = 'conditions'
        and records.concept in ('other_cancer', 'osteoporosis', 'vertebral_fracture')
    group by cohort.patient_id, cohort.index_date
)

select
    cohort.patient_id,
    cohort.index_date,
    cohort.age_at_index,
    case
        when cohort.age_at_index < 40 then '18-39'
        when cohort.age_at_index < 50 then '40-49'
        when cohort.age_at_index < 65 then '50-64'
        when cohort.age_at_index < 80 then '65-79'
        else '80+'
    end as age_band,
    cohort.sex,
    cohort.has_breast_cancer_history,
    cohort.is_in_landmark_population,
    cohort.reference_standard,
    cohort.end_reason = 'bone_metastasis' as is_diagnosed,
    coalesce(encounters_before.n_encounters, 0) as n_encounters_lookback,
    coalesce(history.has_prior_other_cancer, false) as has_prior_other_cancer,
    coalesce(history.has_osteoporosis, false) as has_osteoporosis,
    coalesce(history.has_prior_vertebral_fracture, false) as has_prior_vertebral_fracture,
    -- every flag column of mart.red_flags (in registry order) and red_flag_count: Table 1 follows
    -- the registry without a list here (EXCLUDE is `* EXCEPT` on Spark)
    red_flags.* exclude (patient_id, index_date, not_ascertainable_flags)
from mart.cohort as cohort
inner join mart.red_flags as red_flags
    on red_flags.patient_id = cohort.patient_id and red_flags.index_date = cohort.index_date
left join encounters_before
    on encounters_before.patient_id = cohort.patient_id and encounters_before.index_date = cohort.index_date
left join history
    on history.patient_id = cohort.patient_id and history.index_date = cohort.index_date
