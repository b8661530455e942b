-- purpose: the records that set each red flag (table, date, code); flags that cannot be ascertained keep no evidence
-- grain: one row per (episode, flag, evidence record)
-- parameters: none
with evidence as (
    select * from intermediate.int_flag_persistent_pain
    union all
    select * from intermediate.int_flag_coded_findings
    union all
    select * from intermediate.int_flag_weight_loss_measured
    union all
    select * from intermediate.int_flag_breast_cancer_history
    union all
    select * from intermediate.int_flag_age_50_plus
    union all
    select * from intermediate.int_flag_failed_conservative_therapy
    union all
    select * from intermediate.int_flag_elevated_alp
)

select distinct
    evidence.patient_id,
    evidence.index_date,
    evidence.flag,
    evidence.source_table,
    evidence.record_date,
    evidence.code
from evidence
inner join intermediate.int_flag_ascertainability as flags
    on flags.flag = evidence.flag and flags.is_ascertainable
