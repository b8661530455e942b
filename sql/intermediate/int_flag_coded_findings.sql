-- purpose: evidence for the flags defined by a coded finding in the window: night pain, neuro symptoms, spinal tenderness, coded weight loss (PROTOCOL 5)
-- grain: one row per evidence record
-- parameters: none
with concept_flags as (
    select * from (
        values
            ('night_pain', 'night_pain'),
            ('neuro_symptoms', 'neuro_symptoms'),
            ('spinal_tenderness', 'spinal_tenderness'),
            ('weight_loss_coded', 'weight_loss')
    ) as concept_flag_list (concept, flag)
)

select windows.patient_id, windows.index_date, concept_flags.flag, records.source_table, records.record_date, records.code
from intermediate.int_flag_windows as windows
inner join intermediate.int_concept_records as records on records.patient_id = windows.patient_id
inner join concept_flags on concept_flags.concept = records.concept
-- diagnoses and encounter reasons only (required tables), so these flags never depend on an optional file
where records.source_table in ('conditions', 'encounters')
    and records.record_date between windows.window_start_date and windows.window_end_date
    and (windows.flag_cutoff_date is null or records.record_date < windows.flag_cutoff_date)
