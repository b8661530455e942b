-- purpose: each cohort episode's red-flag assessment window, and the date from which nothing may set a flag (PROTOCOL 5)
-- grain: one row per cohort episode (patient_id, index_date)
-- parameters: $flag_lookback_days, $landmark_days
select
    patient_id,
    index_date,
    age_at_index,
    observation_end_date,
    index_date - $flag_lookback_days as window_start_date,
    index_date + $landmark_days as window_end_date,
    -- the first bone-metastasis record after index, even one outside follow-up: no leakage from it or later
    first_metastasis_date as flag_cutoff_date
from intermediate.int_follow_up
