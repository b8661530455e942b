-- purpose: evidence for Deyo's age flag: age 50 or more (completed years) at index; the birth date is the evidence
-- grain: one row per flagged episode
-- parameters: none
select
    windows.patient_id,
    windows.index_date,
    'age_50_plus' as flag,
    'patients' as source_table,
    patients.birth_date as record_date,
    cast(null as varchar) as code
from intermediate.int_flag_windows as windows
inner join staging.stg_synthea__patients as patients on patients.patient_id = windows.patient_id
where windows.age_at_index >= 50
