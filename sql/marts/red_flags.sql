-- purpose: the red flags of each cohort episode (PROTOCOL 5): true/false, NULL when not ascertainable; count of the six seed flags
-- grain: one row per episode (patient_id, index_date)
-- parameters: none
with fired as (
    select
        patient_id,
        index_date,
        max(case when flag = 'persistent_pain' then 1 else 0 end) = 1 as persistent_pain,
        max(case when flag = 'night_pain' then 1 else 0 end) = 1 as night_pain,
        max(case when flag = 'weight_loss' then 1 else 0 end) = 1 as weight_loss,
        max(case when flag = 'neuro_symptoms' then 1 else 0 end) = 1 as neuro_symptoms,
        max(case when flag = 'spinal_tenderness' then 1 else 0 end) = 1 as spinal_tenderness,
        max(case when flag = 'breast_cancer_history' then 1 else 0 end) = 1 as breast_cancer_history,
        max(case when flag = 'age_50_plus' then 1 else 0 end) = 1 as age_50_plus,
        max(case when flag = 'failed_conservative_therapy' then 1 else 0 end) = 1 as failed_conservative_therapy,
        max(case when flag = 'elevated_alp' then 1 else 0 end) = 1 as elevated_alp
    from mart.red_flag_evidence
    group by patient_id, index_date
),

flags as (
    -- NULL (not false) when the flag cannot be ascertained in this export or under these settings
    select
        cohort.patient_id,
        cohort.index_date,
        case when ascertainable.persistent_pain then coalesce(fired.persistent_pain, false) end as flag_persistent_pain,
        case when ascertainable.night_pain then coalesce(fired.night_pain, false) end as flag_night_pain,
        case when ascertainable.weight_loss then coalesce(fired.weight_loss, false) end as flag_weight_loss,
        case when ascertainable.neuro_symptoms then coalesce(fired.neuro_symptoms, false) end as flag_neuro_symptoms,
        case when ascertainable.spinal_tenderness then coalesce(fired.spinal_tenderness, false) end as flag_spinal_tenderness,
        case when ascertainable.breast_cancer_history then coalesce(fired.breast_cancer_history, false) end
            as flag_breast_cancer_history,
        case when ascertainable.age_50_plus then coalesce(fired.age_50_plus, false) end as flag_age_50_plus,
        case when ascertainable.failed_conservative_therapy then coalesce(fired.failed_conservative_therapy, false) end
            as flag_failed_conservative_therapy,
        case when ascertainable.elevated_alp then coalesce(fired.elevated_alp, false) end as flag_elevated_alp,
        ascertainable.not_ascertainable_flags
    from mart.cohort as cohort
    cross join intermediate.int_flags_ascertainable_wide as ascertainable
    left join fired on fired.patient_id = cohort.patient_id and fired.index_date = cohort.index_date
)

select
    patient_id,
    index_date,
    flag_persistent_pain,
    flag_night_pain,
    flag_weight_loss,
    flag_neuro_symptoms,
    flag_spinal_tenderness,
    flag_breast_cancer_history,
    flag_age_50_plus,
    flag_failed_conservative_therapy,
    flag_elevated_alp,
    -- seed flags only; a flag that cannot be ascertained counts as absent (and is listed)
    (case when flag_persistent_pain then 1 else 0 end) + (case when flag_night_pain then 1 else 0 end)
    + (case when flag_weight_loss then 1 else 0 end) + (case when flag_neuro_symptoms then 1 else 0 end)
    + (case when flag_spinal_tenderness then 1 else 0 end) + (case when flag_breast_cancer_history then 1 else 0 end)
        as red_flag_count,
    not_ascertainable_flags
from flags
