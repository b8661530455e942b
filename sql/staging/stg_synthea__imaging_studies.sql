-- purpose: imaging studies with body site and procedure (SNOMED) and modality (DICOM) codes in compare form
-- grain: one row per imaging study record (Synthea writes one row per instance; duplicates are harmless downstream)
-- parameters: none
select
    patient_id,
    studied_at,
    cast(studied_at as date) as study_date,
    upper(replace(trim(body_site_code), '.', '')) as body_site_code,
    upper(trim(modality_code)) as modality_code,
    upper(replace(trim(procedure_code), '.', '')) as procedure_code
from raw.imaging_studies
-- records dated before 1900 or in the future are implausible (kept in raw, listed in
-- dq.data_quality_issues) and left out here: a year-2999 date would move the data extract date
where cast(studied_at as date) between date '1900-01-01' and current_date + 1
