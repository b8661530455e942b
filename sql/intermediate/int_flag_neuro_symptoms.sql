-- purpose: evidence of neurological symptoms: numbness, paresthesia, muscle weakness or inability to walk coded in the window (PROTOCOL 5)
-- grain: one row per evidence record
-- parameters: none
select
    windows.patient_id,
    windows.index_date,
    'neuro_symptoms' as flag,
    records.source_table,
    records.record_date,
    records.code
from intermediate.int_flag_windows as windows
inner join intermediate.int_concept_records as records on records.patient_id = windows.patient_id
where records.concept = 'neuro_symptoms'
    -- diagnoses and encounter reasons only (required tables), so the flag never depends on an optional file
    and records.source_table in ('conditions', 'encounters')
    and records.record_date between windows.window_start_date and windows.window_end_date
    and (windows.flag_cutoff_date is null or records.record_date < windows.flag_cutoff_date)
