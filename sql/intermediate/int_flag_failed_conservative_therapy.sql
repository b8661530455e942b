-- purpose: evidence of failed conservative therapy: a non-opioid analgesic started on/after index, then an opioid started on a later date, within the window (PROTOCOL 5)
-- grain: one row per evidence record (both the non-opioid and the later opioid order)
-- parameters: none
with analgesics as (
    select windows.patient_id, windows.index_date, records.concept, records.record_date, records.code
    from intermediate.int_flag_windows as windows
    inner join intermediate.int_concept_records as records on records.patient_id = windows.patient_id
    where records.source_table = 'medications'
        and records.concept in ('non_opioid_analgesic', 'opioid')
        and records.record_date between windows.index_date and windows.window_end_date
        and (windows.flag_cutoff_date is null or records.record_date < windows.flag_cutoff_date)
),

escalations as (
    select
        non_opioids.patient_id,
        non_opioids.index_date,
        non_opioids.record_date as non_opioid_date,
        non_opioids.code as non_opioid_code,
        opioids.record_date as opioid_date,
        opioids.code as opioid_code
    from analgesics as non_opioids
    inner join analgesics as opioids
        on opioids.patient_id = non_opioids.patient_id
        and opioids.index_date = non_opioids.index_date
        and opioids.concept = 'opioid'
        and opioids.record_date > non_opioids.record_date
    where non_opioids.concept = 'non_opioid_analgesic'
)

select patient_id, index_date, 'failed_conservative_therapy' as flag, 'medications' as source_table,
    non_opioid_date as record_date, non_opioid_code as code
from escalations
union
select patient_id, index_date, 'failed_conservative_therapy', 'medications', opioid_date, opioid_code
from escalations
