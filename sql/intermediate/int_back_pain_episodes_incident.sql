-- purpose: incident back-pain episodes: a back-pain record on/after study start with no back-pain record in the washout_days before it (PROTOCOL 3)
-- grain: one row per (patient_id, index_date); only each patient's first incident episode unless allow_repeat_episodes
-- parameters: $study_start_date, $washout_days, $allow_repeat_episodes
with record_days as (
    select distinct patient_id, record_date from intermediate.int_back_pain_records
),

with_previous_record as (
    select
        patient_id,
        record_date,
        lag(record_date) over (partition by patient_id order by record_date) as previous_record_date
    from record_days
),

incident as (
    -- a record on day index - washout_days still falls in the washout and makes the day non-incident
    select patient_id, record_date as index_date
    from with_previous_record
    where record_date >= $study_start_date
        and (previous_record_date is null or previous_record_date < record_date - $washout_days)
)

select
    patient_id,
    index_date,
    row_number() over (partition by patient_id order by index_date) as episode_number
from incident
qualify $allow_repeat_episodes or row_number() over (partition by patient_id order by index_date) = 1
