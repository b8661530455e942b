-- purpose: the red flags of each cohort episode (PROTOCOL 5): true/false, NULL when not ascertainable; count of the seed flags
-- grain: one row per episode (patient_id, index_date)
-- parameters: none
with fired as (
    select distinct patient_id, index_date, flag from mart.red_flag_evidence
),

episode_flags as (
    -- every episode with every flag of the registry: 1 or 0, NULL (not 0) when the flag cannot
    -- be ascertained in this export or under these settings
    select
        cohort.patient_id,
        cohort.index_date,
        flags.flag,
        flags.is_seed_flag,
        case when flags.is_ascertainable then case when fired.flag is null then 0 else 1 end end as is_set
    from mart.cohort as cohort
    cross join intermediate.int_flag_ascertainability as flags
    left join fired
        on fired.patient_id = cohort.patient_id and fired.index_date = cohort.index_date and fired.flag = flags.flag
),

ascertainability as (
    -- in registry order; concat_ws skips NULLs, and gives '' when every flag is ascertainable
    select
        concat_ws(',',
            max(case when flag = 'persistent_pain' and not is_ascertainable then flag end),
            max(case when flag = 'night_pain' and not is_ascertainable then flag end),
            max(case when flag = 'weight_loss' and not is_ascertainable then flag end),
            max(case when flag = 'neuro_symptoms' and not is_ascertainable then flag end),
            max(case when flag = 'spinal_tenderness' and not is_ascertainable then flag end),
            max(case when flag = 'breast_cancer_history' and not is_ascertainable then flag end),
            max(case when flag = 'age_50_plus' and not is_ascertainable then flag end),
            max(case when flag = 'failed_conservative_therapy' and not is_ascertainable then flag end),
            max(case when flag = 'elevated_alp' and not is_ascertainable then flag end)
        ) as not_ascertainable_flags
    from intermediate.int_flag_ascertainability
),

flags as (
    -- the wide pivot: one column per flag, in the order of valuesets/flags.csv (a test checks both lists)
    select
        patient_id,
        index_date,
        max(case when flag = 'persistent_pain' then is_set end) = 1 as flag_persistent_pain,
        max(case when flag = 'night_pain' then is_set end) = 1 as flag_night_pain,
        max(case when flag = 'weight_loss' then is_set end) = 1 as flag_weight_loss,
        max(case when flag = 'neuro_symptoms' then is_set end) = 1 as flag_neuro_symptoms,
        max(case when flag = 'spinal_tenderness' then is_set end) = 1 as flag_spinal_tenderness,
        max(case when flag = 'breast_cancer_history' then is_set end) = 1 as flag_breast_cancer_history,
        max(case when flag = 'age_50_plus' then is_set end) = 1 as flag_age_50_plus,
        max(case when flag = 'failed_conservative_therapy' then is_set end) = 1 as flag_failed_conservative_therapy,
        max(case when flag = 'elevated_alp' then is_set end) = 1 as flag_elevated_alp,
        -- seed flags only; a flag that cannot be ascertained counts as absent (and is listed)
        cast(sum(case when is_seed_flag then coalesce(is_set, 0) else 0 end) as integer) as red_flag_count
    from episode_flags
    group by patient_id, index_date
)

select flags.*, ascertainability.not_ascertainable_flags
from flags
cross join ascertainability
