-- purpose: observation periods of the source (OMOP observation_period; none for Synthea CSV and FHIR, whose observation ends at the last encounter)
-- grain: one row per observation period
-- parameters: none
select
    patient_id,
    start_date,
    end_date
from meta.observation_periods
-- the OMOP load quarantines periods with unparseable or missing dates or an end before the
-- start; implausible years are left out as for every other staged date
where start_date between date '1900-01-01' and current_date + 1
    and end_date >= start_date
