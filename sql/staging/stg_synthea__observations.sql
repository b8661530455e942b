-- purpose: observations with a canonical code system, compare-form code and numeric value (NULL when not a number); values of the study's numeric concepts (body weight, ALP) in their canonical unit (meta.unit_conversions: kg, U/L), NULL when the unit is unknown
-- grain: one row per observation record
-- parameters: none
with default_system as (
    select code_system from meta.code_system_defaults where table_name = 'observations'
),

converted_codes as (
    select distinct code from meta.unit_conversions
),

observations as (
    select
        *,
        upper(replace(trim(code), '.', '')) as code_key,
        try_cast(value as decimal(18, 4)) as value_as_read
    from raw.observations
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
    observations.code_key as code,
    -- ingest quarantines unknown units, so a converted code without a conversion is not expected
    case
        when converted_codes.code is null then observations.value_as_read
        when conversions.factor = 1 then observations.value_as_read
        else cast(observations.value_as_read * conversions.factor as decimal(18, 4))
    end as value_number,
    coalesce(conversions.canonical_unit, case when converted_codes.code is null then observations.units end) as units
from observations
left join meta.code_system_aliases as aliases
    on aliases.alias = upper(trim(observations.code_system))
left join converted_codes
    on converted_codes.code = observations.code_key
left join meta.unit_conversions as conversions
    on conversions.code = observations.code_key
    -- the unit is normalised only for a code that has conversions (a few of ~21M rows at
    -- 100k patients): the same matches, without lower(trim()) of every row's unit
    and conversions.unit = case
        when converted_codes.code is not null then lower(trim(coalesce(observations.units, '')))
    end
cross join default_system
