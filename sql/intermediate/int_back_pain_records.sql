-- purpose: back-pain records: a condition whose code is in the back-pain value set (dated by START) or an encounter with such a REASONCODE, up to the extract date
-- grain: one row per source record
-- parameters: none
select
    records.patient_id,
    records.source_table,
    records.record_date,
    records.stop_date,
    records.code
from intermediate.int_concept_records as records
cross join intermediate.int_data_extract_date as extract
where records.concept = 'back_pain'
    and records.source_table in ('conditions', 'encounters')
    and records.record_date <= extract.data_extract_date
