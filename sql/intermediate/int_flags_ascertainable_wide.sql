-- purpose: flag ascertainability as one row with a column per flag, and the comma-separated list of flags that cannot be ascertained
-- grain: one row
-- parameters: none
select
    max(case when flag = 'persistent_pain' and is_ascertainable then 1 else 0 end) = 1 as persistent_pain,
    max(case when flag = 'night_pain' and is_ascertainable then 1 else 0 end) = 1 as night_pain,
    max(case when flag = 'weight_loss' and is_ascertainable then 1 else 0 end) = 1 as weight_loss,
    max(case when flag = 'neuro_symptoms' and is_ascertainable then 1 else 0 end) = 1 as neuro_symptoms,
    max(case when flag = 'spinal_tenderness' and is_ascertainable then 1 else 0 end) = 1 as spinal_tenderness,
    max(case when flag = 'breast_cancer_history' and is_ascertainable then 1 else 0 end) = 1 as breast_cancer_history,
    max(case when flag = 'age_50_plus' and is_ascertainable then 1 else 0 end) = 1 as age_50_plus,
    max(case when flag = 'failed_conservative_therapy' and is_ascertainable then 1 else 0 end) = 1
        as failed_conservative_therapy,
    max(case when flag = 'elevated_alp' and is_ascertainable then 1 else 0 end) = 1 as elevated_alp,
    -- in flag order; concat_ws skips NULLs, and gives '' when every flag is ascertainable
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
