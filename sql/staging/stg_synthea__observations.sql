-- purpose: observations with a canonical code system, compare-form code and numeric value (NULL when not a number)
-- grain: one row per observation record
-- parameters: none
with default_system as (
    select code_system from meta.code_system_defaults where table_name = 'observations'
)

select
    observations.patient_id,
    observations.observed_at,
    cast(observations.observed_at as date) as observation_date,
    coalesce(
        aliases.code_system,
        nullif(upper(trim(observations.code_system)), ''),
        default_system.code_system
    ) as code_system,
    upper(replace(trim(observations.code), '.', '')) as code,
    try_cast(observations.value as decimal(18, 4)) as value_number,
    observations.units
from raw.observations as observations
left join meta.code_system_aliases as aliases
    on aliases.alias = upper(trim(observations.code_system))
cross join default_system
