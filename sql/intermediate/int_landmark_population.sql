-- purpose: the discrimination population (alive and undiagnosed after, and under observation on, index + landmark_days) and the reference standard (PROTOCOL 6.3)
-- grain: one row per cohort episode (patient_id, index_date)
-- parameters: $landmark_days
with episodes as (
    select *, index_date + $landmark_days as landmark_date
    from intermediate.int_follow_up
),

membership as (
    select
        *,
        (outcome_date is null or outcome_date > landmark_date)
        and (death_date is null or death_date > landmark_date)
        and observation_end_date >= landmark_date as is_in_landmark_population
    from episodes
)

select
    patient_id,
    index_date,
    landmark_date,
    is_in_landmark_population,
    -- within the landmark population: outcome within the horizon true; death before the horizon without it
    -- false (follow-up complete); observation ending before the horizon without either: NULL (censored)
    case
        when not is_in_landmark_population then null
        when outcome_date is not null then true
        when death_date <= horizon_date then false
        when observation_end_date >= horizon_date then false
    end as reference_standard
from membership
