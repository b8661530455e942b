-- purpose: patients with the attributes the study uses; sex as F/M, NULL when not reported
-- grain: one row per patient_id
-- parameters: none
select
    patient_id,
    birth_date,
    death_date,
    case upper(trim(sex))
        when 'F' then 'F'
        when 'FEMALE' then 'F'
        when 'M' then 'M'
        when 'MALE' then 'M'
    end as sex
from raw.patients
