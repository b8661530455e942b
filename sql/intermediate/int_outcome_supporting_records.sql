-- purpose: supporting outcome codes (cord compression, pathological vertebral fracture) recorded after index within follow-up; reported, not required (PROTOCOL 4)
-- grain: one row per supporting record per cohort episode
-- parameters: none
select
    follow_up.patient_id,
    follow_up.index_date,
    follow_up.outcome_date,
    records.source_table,
    records.record_date,
    records.code
from intermediate.int_follow_up as follow_up
inner join intermediate.int_concept_records as records on records.patient_id = follow_up.patient_id
where records.concept = 'bone_metastasis_supporting'
    and records.source_table in ('conditions', 'encounters')
    and records.record_date > follow_up.index_date
    and records.record_date <= follow_up.follow_up_end_date
