-- purpose: spine imaging records (X-ray, CT, MRI, bone scan) from procedures and from imaging studies with a spine body site
-- grain: one row per imaging record
-- parameters: none
with imaging_codes as (
    select distinct concept, code_system, code, replace(concept, 'spine_imaging_', '') as modality
    from meta.value_sets
    where concept like 'spine_imaging_%'
),

body_sites as (
    select distinct code from meta.value_sets where concept = 'spine_body_site' and code_system = 'SNOMED'
),

studies as (
    -- a spine procedure code, or an imaging modality with a spine (or whole-body) body site
    select
        studies.patient_id, studies.study_date, studies.studied_at, studies.procedure_code, studies.modality_code,
        coalesce(procedure_codes.modality, case when body_sites.code is not null then modality_codes.modality end) as modality
    from staging.stg_synthea__imaging_studies as studies
    left join imaging_codes as procedure_codes
        on procedure_codes.code_system = 'SNOMED' and procedure_codes.code = studies.procedure_code
    left join imaging_codes as modality_codes
        on modality_codes.code_system = 'DICOM' and modality_codes.code = studies.modality_code
    left join body_sites on body_sites.code = studies.body_site_code
)

select patient_id, 'imaging_studies' as source_table, study_date as imaging_date, studied_at as imaging_at,
    modality, coalesce(procedure_code, modality_code) as code
from studies
where modality is not null
union all
select procedures.patient_id, 'procedures', procedures.procedure_date, procedures.procedure_at,
    imaging_codes.modality, procedures.code
from staging.stg_synthea__procedures as procedures
inner join imaging_codes on imaging_codes.code_system = procedures.code_system and imaging_codes.code = procedures.code
