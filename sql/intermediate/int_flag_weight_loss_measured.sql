-- purpose: evidence of measured weight loss: body weight fell by >= weight_loss_fraction from the highest value in the weight_baseline_days before index to the latest value in the window (PROTOCOL 5)
-- grain: one row per evidence record (the latest weight that shows the loss)
-- parameters: $weight_baseline_days, $weight_loss_fraction
with weights as (
    select patient_id, record_date, recorded_at, code, value_number
    from intermediate.int_concept_records
    where concept = 'body_weight' and source_table = 'observations' and value_number > 0
),

baseline as (
    select windows.patient_id, windows.index_date, max(weights.value_number) as baseline_weight
    from intermediate.int_flag_windows as windows
    inner join weights on weights.patient_id = windows.patient_id
    where weights.record_date >= windows.index_date - $weight_baseline_days
        and weights.record_date < windows.index_date
    group by windows.patient_id, windows.index_date
),

latest as (
    select windows.patient_id, windows.index_date, weights.record_date, weights.code, weights.value_number as latest_weight
    from intermediate.int_flag_windows as windows
    inner join weights on weights.patient_id = windows.patient_id
    where weights.record_date between windows.window_start_date and windows.window_end_date
        and (windows.flag_cutoff_date is null or weights.record_date < windows.flag_cutoff_date)
    qualify row_number() over (
        partition by windows.patient_id, windows.index_date
        order by weights.recorded_at desc, weights.value_number desc
    ) = 1
)

-- exact decimal arithmetic, so a loss of exactly the fraction counts
select latest.patient_id, latest.index_date, 'weight_loss' as flag, 'observations' as source_table, latest.record_date, latest.code
from latest
inner join baseline on baseline.patient_id = latest.patient_id and baseline.index_date = latest.index_date
where baseline.baseline_weight - latest.latest_weight
    >= baseline.baseline_weight * cast($weight_loss_fraction as decimal(9, 6))
