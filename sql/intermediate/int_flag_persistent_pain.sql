-- purpose: evidence the episode persisted: a repeat back-pain record from index + early_repeat_days to the window end, or the episode's back-pain condition still active on index + persistence_days (PROTOCOL 5)
-- grain: one row per evidence record
-- parameters: $early_repeat_days, $persistence_days
with repeat_records as (
    -- a repeat visit in the first early_repeat_days (4 weeks) does not count
    select windows.patient_id, windows.index_date, records.source_table, records.record_date, records.code
    from intermediate.int_flag_windows as windows
    inner join intermediate.int_back_pain_records as records on records.patient_id = windows.patient_id
    where records.record_date between windows.index_date + $early_repeat_days and windows.window_end_date
        and (windows.flag_cutoff_date is null or records.record_date < windows.flag_cutoff_date)
),

active_conditions as (
    -- a back-pain condition begun by the index date (in the window) whose STOP is empty or on/after
    -- index + persistence_days; conditions begun after index count only as repeat records (from day 28).
    -- That day must itself fall under observation and before any bone-metastasis record.
    select windows.patient_id, windows.index_date, records.source_table, records.record_date, records.code
    from intermediate.int_flag_windows as windows
    inner join intermediate.int_back_pain_records as records on records.patient_id = windows.patient_id
    where records.source_table = 'conditions'
        and records.record_date between windows.window_start_date and windows.index_date
        and (records.stop_date is null or records.stop_date >= windows.index_date + $persistence_days)
        and windows.index_date + $persistence_days <= windows.observation_end_date
        and (windows.flag_cutoff_date is null or windows.index_date + $persistence_days < windows.flag_cutoff_date)
)

select patient_id, index_date, 'persistent_pain' as flag, source_table, record_date, code from repeat_records
union all
select patient_id, index_date, 'persistent_pain' as flag, source_table, record_date, code from active_conditions
