-- purpose: the study cohort: incident back-pain episodes meeting PROTOCOL 3, with follow-up, outcome, landmark membership and reference standard
-- grain: one row per episode (patient_id, index_date)
-- parameters: none
with breast_cancer_history as (
    select distinct patient_id, index_date from intermediate.int_flag_breast_cancer_history
)

select
    follow_up.patient_id,
    follow_up.index_date,
    follow_up.age_at_index,
    follow_up.sex,
    breast_cancer_history.patient_id is not null as has_breast_cancer_history,
    follow_up.observation_end_date,
    follow_up.follow_up_end_date,
    follow_up.end_reason,
    follow_up.outcome_date,
    date_diff('day', follow_up.index_date, follow_up.outcome_date) as days_to_outcome,
    landmark.is_in_landmark_population,
    landmark.reference_standard,
    follow_up.death_date,
    date_diff('day', follow_up.index_date, follow_up.follow_up_end_date) as days_to_follow_up_end
from intermediate.int_follow_up as follow_up
inner join intermediate.int_landmark_population as landmark
    on landmark.patient_id = follow_up.patient_id and landmark.index_date = follow_up.index_date
left join breast_cancer_history
    on breast_cancer_history.patient_id = follow_up.patient_id
    and breast_cancer_history.index_date = follow_up.index_date
