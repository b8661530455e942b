-- purpose: evidence of a breast-cancer history: a breast-cancer diagnosis recorded at any time before the index date (never 429740004, family history)
-- grain: one row per evidence record
-- parameters: none
select
    windows.patient_id,
    windows.index_date,
    'breast_cancer_history' as flag,
    records.source_table,
    records.record_date,
    records.code
from intermediate.int_flag_windows as windows
inner join intermediate.int_concept_records as records on records.patient_id = windows.patient_id
where records.concept = 'breast_cancer'
    and records.source_table in ('conditions', 'encounters')
    and records.record_date < windows.index_date
