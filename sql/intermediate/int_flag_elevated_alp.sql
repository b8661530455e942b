-- purpose: evidence of raised alkaline phosphatase: a value above alp_upper_limit (U/L) in the window (PROTOCOL 5)
-- grain: one row per evidence record
-- parameters: $alp_upper_limit
select
    windows.patient_id,
    windows.index_date,
    'elevated_alp' as flag,
    records.source_table,
    records.record_date,
    records.code
from intermediate.int_flag_windows as windows
inner join intermediate.int_concept_records as records on records.patient_id = windows.patient_id
where records.concept = 'alkaline_phosphatase'
    and records.source_table = 'observations'
    and records.value_number > $alp_upper_limit
    and records.record_date between windows.window_start_date and windows.window_end_date
    and (windows.flag_cutoff_date is null or records.record_date < windows.flag_cutoff_date)
