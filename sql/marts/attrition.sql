-- purpose: participant flow: how many remain and how many are excluded at each protocol step (PROTOCOL 3, 6.3)
-- grain: one row per step; steps 1-2 count patients, later steps count episodes (the same when allow_repeat_episodes is false)
-- parameters: $study_start_date
with eligibility as (
    select * from intermediate.int_cohort_eligibility
),

steps as (
    select 1 as step_order, 'patients_in_export' as step, count(*) as n_remaining
    from staging.stg_synthea__patients
    union all
    select 2, 'back_pain_record_from_study_start', count(distinct patient_id)
    from intermediate.int_back_pain_records
    where record_date >= $study_start_date
    union all
    select 3, 'incident_episode_after_washout', count(*) from eligibility
    union all
    select 4, 'age_at_least_min_age', count(case when meets_min_age then 1 end) from eligibility
    union all
    select 5, 'sex_in_study_sexes', count(case when meets_min_age and meets_sex then 1 end) from eligibility
    union all
    select 6, 'prior_observation_at_least_lookback', count(case when meets_min_age and meets_sex and meets_lookback then 1 end)
    from eligibility
    union all
    select 7, 'alive_at_index', count(case when meets_min_age and meets_sex and meets_lookback and is_alive_at_index then 1 end)
    from eligibility
    union all
    select 8, 'no_prevalent_bone_metastasis', count(case when is_eligible then 1 end) from eligibility
    union all
    select 9, 'in_landmark_population', count(case when is_in_landmark_population then 1 end)
    from intermediate.int_landmark_population
    union all
    -- excluded here: observation ended before the horizon without outcome or death (censored)
    select 10, 'reference_standard_known', count(case when is_in_landmark_population and reference_standard is not null then 1 end)
    from intermediate.int_landmark_population
)

select
    step_order,
    step,
    n_remaining,
    coalesce(lag(n_remaining) over (order by step_order) - n_remaining, 0) as n_excluded
from steps
