-- purpose: care received after the bone-metastasis diagnosis (PROTOCOL 6.7): for each care category, whether and when it was first recorded within care_window_days
-- grain: one row per (diagnosed episode, care_category): patient_id, index_date, care_category
-- parameters: $care_window_days
with diagnosed as (
    select patient_id, index_date, outcome_date
    from intermediate.int_follow_up
    where outcome_date is not null
),

care_categories as (
    -- the pain ladder reuses the analgesic concepts of the red flags (failed conservative therapy)
    select * from (
        values
            ('non_opioid_analgesic'), ('opioid'), ('neuropathic_agent'), ('corticosteroid'),
            ('radiotherapy'), ('bone_targeted_agent'), ('chemotherapy'), ('endocrine_therapy'),
            ('targeted_therapy'), ('spine_imaging_xray'), ('spine_imaging_ct'), ('spine_imaging_mri'),
            ('spine_imaging_bone_scan'), ('bone_biopsy'), ('surgical_stabilisation')
    ) as categories (care_category)
),

care_records as (
    select patient_id, record_date, concept as care_category
    from intermediate.int_concept_records
    where source_table in ('medications', 'procedures')
    union all
    -- imaging after diagnosis (staging, follow-up), by modality, procedures and imaging studies
    select patient_id, imaging_date, 'spine_imaging_' || modality
    from intermediate.int_spine_imaging
),

first_care as (
    -- from the diagnosis day on: treatment started the day of diagnosis is care after it
    select diagnosed.patient_id, diagnosed.index_date, records.care_category,
        min(records.record_date) as first_care_date
    from diagnosed
    inner join care_records as records
        on records.patient_id = diagnosed.patient_id
        and records.record_date between diagnosed.outcome_date and diagnosed.outcome_date + $care_window_days
    inner join care_categories on care_categories.care_category = records.care_category
    group by diagnosed.patient_id, diagnosed.index_date, records.care_category
)

select
    diagnosed.patient_id,
    diagnosed.index_date,
    care_categories.care_category,
    diagnosed.outcome_date,
    first_care.first_care_date is not null as has_care,
    first_care.first_care_date,
    date_diff('day', diagnosed.outcome_date, first_care.first_care_date) as days_diagnosis_to_first_care
from diagnosed
cross join care_categories
left join first_care
    on first_care.patient_id = diagnosed.patient_id
    and first_care.index_date = diagnosed.index_date
    and first_care.care_category = care_categories.care_category
