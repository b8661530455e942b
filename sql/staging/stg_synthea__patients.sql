-- purpose: patients with the attributes the study uses; sex as F/M, NULL when not reported; implausible birth and death dates NULL
-- grain: one row per patient_id
-- parameters: none
select
    patient_id,
    -- a birth date before 1900 or in the future (listed in dq.data_quality_issues) is unknown:
    -- no age, so the patient fails the age criterion; a death date out of range or before
    -- birth is unknown too (a year-2999 death would move the data extract date)
    case
        when birth_date between date '1900-01-01' and current_date + 1 then birth_date
    end as birth_date,
    case
        when death_date between date '1900-01-01' and current_date + 1
            and (birth_date is null or death_date >= birth_date)
            then death_date
    end as death_date,
    case upper(trim(sex))
        when 'F' then 'F'
        when 'FEMALE' then 'F'
        when 'M' then 'M'
        when 'MALE' then 'M'
    end as sex
from raw.patients
