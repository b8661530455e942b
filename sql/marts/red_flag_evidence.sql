-- purpose: the records that set each red flag (table, date, code); flags that cannot be ascertained keep no evidence
-- grain: one row per (episode, flag, evidence record)
-- parameters: none
-- int_flag_evidence is the union of the evidence models named in valuesets/flags.csv (pipelines.flags)
select distinct
    evidence.patient_id,
    evidence.index_date,
    evidence.flag,
    evidence.source_table,
    evidence.record_date,
    evidence.code
from intermediate.int_flag_evidence as evidence
inner join intermediate.int_flag_ascertainability as flags
    on flags.flag = evidence.flag and flags.is_ascertainable
