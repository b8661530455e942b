-- purpose: evidence of spinal tenderness: a tenderness-of-spine finding coded in the window (PROTOCOL 5; rarely coded in real data)
-- grain: one row per evidence record
-- parameters: none
select
    windows.patient_id,
    windows.index_date,
    'spinal_tenderness' as flag,
    records.source_table,
    records.record_date,
    records.code
from intermediate.int_flag_windows as windows
inner join intermediate.int_concept_records as records on records.patient_id = windows.patient_id
where records.concept = 'spinal_tenderness'
    -- diagnoses and encounter reasons only (required tables), so the flag never depends on an optional file
    and records.source_table in ('conditions', 'encounters')
    and records.record_date between windows.window_start_date and windows.window_end_date
    and (windows.flag_cutoff_date is null or records.record_date < windows.flag_cutoff_date)
