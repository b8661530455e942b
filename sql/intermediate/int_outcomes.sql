-- purpose: for each eligible episode, the first bone-metastasis record after the index date (follow-up limits applied in int_follow_up)
-- grain: one row per eligible episode (patient_id, index_date)
-- parameters: none
select
    episodes.patient_id,
    episodes.index_date,
    min(records.record_date) as first_metastasis_date
from intermediate.int_cohort_eligibility as episodes
left join intermediate.int_concept_records as records
    on records.patient_id = episodes.patient_id
    and records.concept = 'bone_metastasis'
    and records.source_table in ('conditions', 'encounters')
    and records.record_date > episodes.index_date
where episodes.is_eligible
group by episodes.patient_id, episodes.index_date
