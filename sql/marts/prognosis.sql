-- purpose: presentation and prognosis of each diagnosed episode (PROTOCOL 6.8): diagnostic interval, skeletal-related event around diagnosis, survival from diagnosis
-- grain: one row per cohort episode with a bone-metastasis diagnosis within follow-up (patient_id, index_date)
-- parameters: $sre_window_days
with diagnosed as (
    select patient_id, index_date, age_at_index, sex, outcome_date, death_date, observation_end_date
    from intermediate.int_follow_up
    where outcome_date is not null
),

skeletal_events as (
    -- spinal cord compression or pathological vertebral fracture recorded around the diagnosis:
    -- part of how the metastasis presented, not a later complication
    select diagnosed.patient_id, diagnosed.index_date, min(records.record_date) as first_sre_date
    from diagnosed
    inner join intermediate.int_concept_records as records
        on records.patient_id = diagnosed.patient_id
        and records.concept = 'skeletal_related_event'
        and records.record_date between diagnosed.outcome_date - $sre_window_days
        and diagnosed.outcome_date + $sre_window_days
    group by diagnosed.patient_id, diagnosed.index_date
)

select
    diagnosed.patient_id,
    diagnosed.index_date,
    diagnosed.age_at_index,
    diagnosed.sex,
    diagnosed.outcome_date,
    date_diff('day', diagnosed.index_date, diagnosed.outcome_date) as diagnostic_interval_days,
    skeletal_events.first_sre_date is not null as has_sre_at_presentation,
    skeletal_events.first_sre_date,
    -- survival from diagnosis: to death, else censored at observation end (not at the horizon)
    diagnosed.death_date is not null as is_dead,
    date_diff('day', diagnosed.outcome_date, coalesce(diagnosed.death_date, diagnosed.observation_end_date))
        as days_diagnosis_to_death_or_censoring
from diagnosed
left join skeletal_events
    on skeletal_events.patient_id = diagnosed.patient_id and skeletal_events.index_date = diagnosed.index_date
