-- purpose: whether each red flag can be ascertained: its optional source table is present, and persistence is knowable by the landmark
-- grain: one row per flag
-- parameters: $landmark_days, $persistence_days
with flags as (
    select * from (
        values
            (1, 'persistent_pain', true, cast(null as varchar)),
            (2, 'night_pain', true, cast(null as varchar)),
            (3, 'weight_loss', true, 'observations'),
            (4, 'neuro_symptoms', true, cast(null as varchar)),
            (5, 'spinal_tenderness', true, cast(null as varchar)),
            (6, 'breast_cancer_history', true, cast(null as varchar)),
            (7, 'age_50_plus', false, cast(null as varchar)),
            (8, 'failed_conservative_therapy', false, 'medications'),
            (9, 'elevated_alp', false, 'observations')
    ) as flag_list (flag_order, flag, is_seed_flag, optional_source_table)
)

select
    flags.flag_order,
    flags.flag,
    flags.is_seed_flag,
    flags.optional_source_table,
    coalesce(source_tables.is_present, flags.optional_source_table is null)
    -- persistence on day persistence_days cannot be known at an earlier landmark (landmark-0 analysis)
    and (flags.flag <> 'persistent_pain' or $landmark_days >= $persistence_days) as is_ascertainable
from flags
left join meta.source_tables as source_tables on source_tables.table_name = flags.optional_source_table
