-- purpose: the diagnostic pathway of each episode: first spine imaging on/after index within follow-up and its modality (PROTOCOL 6.2)
-- grain: one row per episode (patient_id, index_date)
-- parameters: none
with first_imaging as (
    select follow_up.patient_id, follow_up.index_date, imaging.imaging_date, imaging.modality
    from intermediate.int_follow_up as follow_up
    inner join intermediate.int_spine_imaging as imaging
        on imaging.patient_id = follow_up.patient_id
        and imaging.imaging_date between follow_up.index_date and follow_up.follow_up_end_date
    -- earliest by time; a same-time tie goes to the more definitive modality
    qualify row_number() over (
        partition by follow_up.patient_id, follow_up.index_date
        order by imaging.imaging_at, case imaging.modality when 'mri' then 1 when 'ct' then 2 when 'bone_scan' then 3 else 4 end
    ) = 1
),

ascertainable as (
    select coalesce(max(case when is_present then 1 else 0 end) = 1, false) as is_imaging_ascertainable
    from meta.source_tables
    where table_name in ('procedures', 'imaging_studies')
)

select
    follow_up.patient_id,
    follow_up.index_date,
    first_imaging.imaging_date as first_spine_imaging_date,
    first_imaging.modality as first_spine_imaging_modality,
    ascertainable.is_imaging_ascertainable
from intermediate.int_follow_up as follow_up
cross join ascertainable
left join first_imaging
    on first_imaging.patient_id = follow_up.patient_id and first_imaging.index_date = follow_up.index_date
