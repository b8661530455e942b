-- purpose: whether each red flag of the registry (meta.flags) can be ascertained: its optional source table is present, and persistence is knowable by the landmark
-- grain: one row per flag
-- parameters: $landmark_days, $persistence_days
select
    flags.flag_order,
    flags.flag,
    flags.is_seed as is_seed_flag,
    flags.needs_table as optional_source_table,
    coalesce(source_tables.is_present, flags.needs_table is null)
    -- persistence on day persistence_days cannot be known at an earlier landmark (landmark-0 analysis)
    and (flags.flag <> 'persistent_pain' or $landmark_days >= $persistence_days) as is_ascertainable
from meta.flags as flags
left join meta.source_tables as source_tables on source_tables.table_name = flags.needs_table
