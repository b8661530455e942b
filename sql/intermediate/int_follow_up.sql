-- purpose: follow-up of each cohort episode: observation end, outcome within follow-up, follow-up end and why it ended (PROTOCOL 3-4)
-- grain: one row per cohort episode (patient_id, index_date)
-- parameters: $horizon_days
with covering_periods as (
    -- OMOP: the observation period that covers the index date ends observation
    -- (PROTOCOL 2-3); the latest end when periods overlap. No rows for Synthea CSV or FHIR.
    select eligibility.patient_id, eligibility.index_date, max(periods.end_date) as period_end_date
    from intermediate.int_cohort_eligibility as eligibility
    inner join staging.stg_synthea__observation_periods as periods
        on periods.patient_id = eligibility.patient_id
        and eligibility.index_date between periods.start_date and periods.end_date
    where eligibility.is_eligible
    group by eligibility.patient_id, eligibility.index_date
),

episodes as (
    select
        eligibility.patient_id,
        eligibility.index_date,
        eligibility.age_at_index,
        eligibility.sex,
        periods.death_date,
        -- the end of the observation period covering the index date (or the death date before
        -- it); without one, the death date, else the last encounter (the index record is itself
        -- a contact); never after the extract date
        least(
            case
                when covering.period_end_date is not null
                    then least(covering.period_end_date, coalesce(periods.death_date, covering.period_end_date))
                else coalesce(periods.death_date, greatest(periods.last_encounter_date, eligibility.index_date))
            end,
            periods.data_extract_date
        ) as observation_end_date,
        eligibility.index_date + $horizon_days as horizon_date,
        outcomes.first_metastasis_date
    from intermediate.int_cohort_eligibility as eligibility
    inner join intermediate.int_observation_periods as periods on periods.patient_id = eligibility.patient_id
    inner join intermediate.int_outcomes as outcomes
        on outcomes.patient_id = eligibility.patient_id and outcomes.index_date = eligibility.index_date
    left join covering_periods as covering
        on covering.patient_id = eligibility.patient_id and covering.index_date = eligibility.index_date
    where eligibility.is_eligible
),

with_outcome as (
    -- the outcome counts only within follow-up: on/before observation end and index + horizon_days
    select
        *,
        case
            when first_metastasis_date <= least(observation_end_date, horizon_date) then first_metastasis_date
        end as outcome_date
    from episodes
)

select
    *,
    coalesce(outcome_date, least(observation_end_date, horizon_date)) as follow_up_end_date,
    -- same-day ties: outcome before death before horizon before end of observation
    case
        when outcome_date is not null then 'bone_metastasis'
        -- a death after the observation period's end is not seen within follow-up
        when death_date <= least(horizon_date, observation_end_date) then 'death'
        when observation_end_date >= horizon_date then 'horizon'
        else 'end_of_observation'
    end as end_reason
from with_outcome
