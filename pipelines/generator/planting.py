"""Planted study signal: back-pain index records, red flags, outcomes, decoys and edge cases.

Each red flag is drawn at its planted sensitivity (diagnosed episodes) or 1 - specificity
(the rest; exactly, within the landmark population: population.draw_flag), then written
as records dated inside the assessment window and strictly before the follow-up end
(outcome, death or last encounter). A flag whose timing cannot
fit (e.g. persistence when the diagnosis comes on day 20) is not planted, and the truth
says so. Decoys are near-miss records that must NOT set a flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.generator import catalog as cat
from pipelines.generator.catalog import ENCOUNTER_INDEX as ENC
from pipelines.generator.params import CARE_CATEGORIES, PlantedParameters
from pipelines.generator.population import (
    CASE_LIKE,
    EXCLUDED_STEP,
    LANDMARK,
    NO_INCIDENT,
    Population,
    completed_years,
    draw_flag,
    uniform_days,
)
from pipelines.generator.records import NEVER, Records, code_id, code_ids, imaging_id, observable_id

PERSISTENCE = ("none", "open_condition", "late_stop", "repeat_record")
_BACK_PAIN = code_ids(cat.BACK_PAIN_CONDITIONS)
_BACK_PAIN_WEIGHTS = np.array([0.45, 0.35, 0.20])


@dataclass
class _Ctx:
    rng: np.random.Generator
    pop: Population
    rec: Records
    p: PlantedParameters
    system: bool  # the layout has SYSTEM, so ICD-10-CM codes may appear
    start: int
    extract: int
    included: np.ndarray = None  # episodes that enter the cohort
    fu: np.ndarray = None  # days from index to follow-up end (outcome, death, last encounter)
    hi: np.ndarray = None  # latest day (from index) a flag record may have
    lo: np.ndarray = None  # the first encounter, in days from index (no record may precede it)

    def days(self, low, high) -> np.ndarray:
        return uniform_days(self.rng, low, high)

    def chance(self, mask: np.ndarray, probability: float) -> np.ndarray:
        return mask & (self.rng.random(mask.size) < probability)

    def icd(self, mask: np.ndarray) -> np.ndarray:
        """Rows to code in ICD-10-CM (drawn for every layout, so all layouts plant the same episodes)."""
        return self.chance(mask, self.p.icd10_fraction) & self.system

    def stop_day(self, patients: np.ndarray, day: np.ndarray) -> np.ndarray:
        """A STOP date no later than the patient's last encounter, death or the extract date."""
        cap = np.minimum(
            np.minimum(self.pop.last_day[patients], self.pop.death[patients]), self.extract
        )
        return np.minimum(day, cap)

    def condition_at(self, patients, rel_day, codes, etype="follow_up", stop_after=14) -> None:
        """An encounter on index + rel_day carrying one condition (STOP stop_after days later, or empty)."""
        patients = np.asarray(patients)
        day = self.pop.index[patients] + rel_day
        enc = self.rec.add_encounters(patients, day, ENC[etype])
        stop = (
            np.full(patients.size, NEVER)
            if stop_after is None
            else self.stop_day(patients, day + stop_after)
        )
        self.rec.add_conditions(enc, codes, stop)


def plant_episodes(
    rng: np.random.Generator,
    pop: Population,
    rec: Records,
    p: PlantedParameters,
    system: bool,
    start: int,
    extract: int,
) -> None:
    """Write every planted record of the chunk and store the final planted values in `pop`."""
    ctx = _Ctx(rng, pop, rec, p, system, start, extract)
    _move_edge_dates(ctx)
    ctx.included = (pop.index < NEVER) & ~pop.is_scenario(*NO_INCIDENT, *EXCLUDED_STEP)
    ctx.fu = np.minimum(np.minimum(pop.outcome, pop.death), pop.last_day) - pop.index
    ctx.hi = np.minimum(LANDMARK, ctx.fu - 1)
    ctx.lo = pop.first_day - pop.index
    _persistence_and_index(ctx)
    _coded_flags(ctx)
    _weight_loss(ctx)
    _breast_cancer(ctx)
    _failed_conservative_therapy(ctx)
    _elevated_alp(ctx)
    pop.age = np.where(pop.index < NEVER, completed_years(pop.birth, pop.index), 0)
    pop.flags["age_50_plus"] = (pop.age >= 50) & ctx.included
    _edge_records(ctx)
    _leakage(ctx)
    _decoys(ctx)
    _imaging(ctx)
    _outcomes(ctx)
    _after_diagnosis(ctx)
    for name, values in pop.flags.items():
        pop.flags[name] = values & ctx.included
    pop.evidence["is_included"] = ctx.included


def _move_edge_dates(ctx: _Ctx) -> None:
    """Dates of the washout and pre-study scenarios, and lookback that covers their records."""
    pop, n = ctx.pop, ctx.pop.n
    gap_before = ctx.days(np.full(n, 30), 200)
    not_incident = pop.is_scenario("washout_not_incident")
    pop.index[not_incident] = ctx.start + ctx.days(np.full(n, 30), 335 - gap_before)[not_incident]
    pop.evidence["earlier_record"] = np.where(not_incident, ctx.start - gap_before, NEVER)
    pre = pop.is_scenario("pre_study_only")
    pop.index[pre] = ctx.start - ctx.days(np.full(pre.sum(), 30), 2000)
    second = pre & (ctx.rng.random(n) < 0.5)  # a second, earlier pre-study record
    pop.evidence["earlier_record"][second] = pop.index[second] - ctx.days(
        np.full(second.sum(), 10), 200
    )
    prior = pop.is_scenario(
        "prior_episode_outside_washout"
    )  # dated with the index in population.py
    pop.evidence["earlier_record"][prior] = pop.prior_record[prior]
    earliest = np.minimum(pop.evidence["earlier_record"], pop.index)
    moved = not_incident | pre | prior
    pop.first_day[moved] = np.minimum(
        pop.first_day[moved], earliest[moved] - ctx.days(np.full(moved.sum(), 30), 1500)
    )


def _persistence_and_index(ctx: _Ctx) -> None:
    """Index records, and whether (and how) the episode is still active at day 42."""
    pop, rng, n = ctx.pop, ctx.rng, ctx.pop.n
    by_reason = rng.random(n) < ctx.p.encounter_reason_fraction
    concept = rng.choice(3, size=n, p=_BACK_PAIN_WEIGHTS)
    leak, early, day28 = (
        pop.is_scenario(s) for s in ("leakage", "early_repeat_visits", "repeat_on_day_28")
    )
    wanted = draw_flag(
        rng, pop, ctx.p, "persistent_pain", forced_true=day28, forced_false=leak | early
    )
    wanted &= ctx.included
    # by the index condition's STOP (empty or >= day 42), or a repeat record on day 28..42
    can_stop = wanted & (ctx.fu >= LANDMARK + 3) & ~by_reason
    can_repeat = wanted & (ctx.hi >= 28)
    pick = rng.random(n)
    mechanism = np.zeros(n, np.int64)
    both = can_stop & can_repeat
    mechanism[both] = np.where(pick < 0.4, 1, np.where(pick < 0.6, 2, 3))[both]
    stop_only = can_stop & ~can_repeat
    mechanism[stop_only] = np.where(pick < 0.67, 1, 2)[stop_only]
    mechanism[can_repeat & ~can_stop] = 3
    mechanism[day28] = 3
    short_stop = np.minimum(ctx.days(np.full(n, 3), 27), np.maximum(ctx.fu - 1, 0))
    short_stop[early] = ctx.days(np.ones(early.sum(), np.int64), 27)
    late_stop = ctx.days(np.full(n, LANDMARK), np.clip(ctx.fu - 1, LANDMARK, 120))
    stop_rel = np.where(mechanism == 2, late_stop, short_stop)
    _write_index(ctx, by_reason, concept, stop_rel, open_stop=mechanism == 1)
    who = np.flatnonzero(mechanism == 3)
    repeat_day = np.where(
        day28[who], 28, ctx.days(np.full(who.size, 28), np.maximum(ctx.hi[who], 28))
    )
    _back_pain_record(
        ctx, who, repeat_day, concept[who], ctx.days(np.zeros(who.size, np.int64), 10)
    )
    _early_repeats(ctx, np.flatnonzero(early), concept)
    pop.flags["persistent_pain"] = mechanism > 0
    pop.evidence["persistence_mechanism"] = mechanism
    pop.evidence["index_by_reason"] = by_reason
    pop.evidence["index_concept"] = concept


def _write_index(
    ctx: _Ctx,
    by_reason: np.ndarray,
    concept: np.ndarray,
    stop_rel: np.ndarray,
    open_stop: np.ndarray,
) -> None:
    pop = ctx.pop
    who = np.flatnonzero(pop.index < NEVER)
    with_reason = by_reason[who] | (ctx.rng.random(who.size) < 0.5)
    reason = np.where(with_reason, _BACK_PAIN[concept[who]], -1)
    enc = ctx.rec.add_encounters(who, pop.index[who], ENC["symptom"], reason)
    as_condition = ~by_reason[who]
    icd = ctx.icd(as_condition)
    code = np.where(icd, code_id(cat.BACK_PAIN_ICD10), _BACK_PAIN[concept[who]])
    stop = np.where(open_stop[who], NEVER, ctx.stop_day(who, pop.index[who] + stop_rel[who]))
    ctx.rec.add_conditions(enc[as_condition], code[as_condition], stop[as_condition])


def _back_pain_record(
    ctx: _Ctx, who: np.ndarray, rel_day: np.ndarray, concept: np.ndarray, stop_rel: np.ndarray
) -> None:
    """Further back-pain records (arrays aligned with `who`): a condition (60%) or an encounter
    whose REASONCODE is back pain."""
    as_condition = ctx.rng.random(who.size) < 0.6
    c, r = who[as_condition], who[~as_condition]
    ctx.condition_at(
        c,
        rel_day[as_condition],
        _BACK_PAIN[concept[as_condition]],
        stop_after=stop_rel[as_condition],
    )
    ctx.rec.add_encounters(
        r,
        ctx.pop.index[r] + rel_day[~as_condition],
        ENC["follow_up"],
        _BACK_PAIN[concept[~as_condition]],
    )


def _early_repeats(ctx: _Ctx, who: np.ndarray, concept: np.ndarray) -> None:
    """One to three repeat visits on days 1-27 (half of them on day 27): not persistence."""
    count = ctx.rng.integers(1, 4, who.size)
    rows = np.repeat(who, count)
    first = np.r_[0, np.cumsum(count)[:-1]]
    day = ctx.days(np.ones(rows.size, np.int64), 27)
    day[first[ctx.rng.random(who.size) < 0.5]] = 27
    stop_rel = np.minimum(day + ctx.days(np.zeros(rows.size, np.int64), 5), 27) - day
    _back_pain_record(ctx, rows, day, concept[rows], stop_rel)


def _coded_flags(ctx: _Ctx) -> None:
    """Night pain, neurological symptoms and spinal tenderness as condition records in the window."""
    specs = {
        "night_pain": (np.full(1, code_id(cat.NIGHT_PAIN)), None, 0),
        "neuro_symptoms": (code_ids(cat.NEURO_SYMPTOMS), code_ids(cat.NEURO_SYMPTOMS_ICD10), -14),
        "spinal_tenderness": (np.full(1, code_id(cat.SPINAL_TENDERNESS)), None, 0),
    }
    for flag, (snomed, icd10, earliest) in specs.items():
        wanted = draw_flag(ctx.rng, ctx.pop, ctx.p, flag) & _plantable(ctx) & (ctx.hi >= 0)
        _coded_record(ctx, np.flatnonzero(wanted), snomed, icd10, earliest)
        ctx.pop.flags[flag] = wanted


def _plantable(ctx: _Ctx) -> np.ndarray:
    return ctx.included & ~ctx.pop.is_scenario("leakage")


def _coded_record(
    ctx: _Ctx, who: np.ndarray, snomed: np.ndarray, icd10, earliest: int, day=None
) -> None:
    if day is None:
        day = ctx.days(np.maximum(ctx.lo[who], earliest), ctx.hi[who])
    code = ctx.rng.choice(snomed, size=who.size)
    if icd10 is not None:
        icd = ctx.icd(np.ones(who.size, bool))
        code = np.where(icd, ctx.rng.choice(icd10, size=who.size), code)
    ctx.condition_at(who, day, code)


def _weight_loss(ctx: _Ctx) -> None:
    """Coded unintentional weight loss, a measured drop of 8-15% of body weight, or both."""
    pop, rng, n = ctx.pop, ctx.rng, ctx.pop.n
    wanted = draw_flag(rng, pop, ctx.p, "weight_loss") & _plantable(ctx) & (ctx.hi >= 0)
    kind = rng.choice(3, size=n, p=[0.4, 0.4, 0.2])  # coded, measured, both
    coded, measured = wanted & (kind != 1), wanted & (kind != 0)
    who = np.flatnonzero(coded)
    _coded_record(
        ctx,
        who,
        np.full(1, code_id(cat.WEIGHT_LOSS)),
        np.full(1, code_id(cat.WEIGHT_LOSS_ICD10)),
        -30,
    )
    who = np.flatnonzero(measured)
    drop = ctx.days(np.maximum(-30, ctx.lo[who] + 21), ctx.hi[who])
    baseline = ctx.days(np.maximum(-330, ctx.lo[who]), drop - 20)
    pop.drop_day[who] = pop.index[who] + drop
    pop.drop_fraction[who] = rng.uniform(0.08, 0.15, who.size)
    add_vitals(ctx.rec, np.r_[who, who], np.r_[pop.index[who] + baseline, pop.drop_day[who]])
    pop.flags["weight_loss"] = wanted
    pop.evidence["weight_loss_coded"] = coded
    pop.evidence["weight_loss_measured"] = measured


def add_vitals(
    rec: Records, patients: np.ndarray, days: np.ndarray, etype: str = "follow_up"
) -> None:
    """A visit with height, weight and BMI (values filled from the weight trajectory later)."""
    enc = rec.add_encounters(patients, days, ENC[etype])
    for obs in (cat.HEIGHT, cat.WEIGHT, cat.BMI):
        rec.add_observations(enc, observable_id(obs), np.nan)


def _breast_cancer(ctx: _Ctx) -> None:
    """Breast cancer diagnosed 30 days to 5 years before index (open condition); FAMILY history decoys."""
    pop = ctx.pop
    has = pop.flags["breast_cancer_history"] & (
        ctx.included | pop.is_scenario("prevalent_metastasis")
    )
    has &= ~pop.is_scenario("leakage")
    who = np.flatnonzero(has)
    latest = np.minimum(pop.index[who] - 30, pop.prevalent_day[who] - 30)
    day = np.clip(
        pop.index[who] - ctx.days(np.full(who.size, 30), 1825), pop.first_day[who], latest
    )
    code = np.full(who.size, code_id(cat.BREAST_CANCER))
    icd = ctx.icd(np.ones(who.size, bool))
    code[icd] = ctx.rng.choice(code_ids(cat.BREAST_CANCER_ICD10), size=icd.sum())
    ctx.condition_at(who, day - pop.index[who], code, etype="problem", stop_after=None)
    pop.flags["breast_cancer_history"] = has
    family = ctx.chance(ctx.included & ~has, ctx.p.family_history_fraction)
    who = np.flatnonzero(family)
    day = np.maximum(pop.index[who] - ctx.days(np.full(who.size, 30), 1000), pop.first_day[who])
    code = np.where(
        ctx.icd(np.ones(who.size, bool)),
        code_id(cat.FAMILY_HISTORY_ICD10),
        code_id(cat.FAMILY_HISTORY_BREAST_CANCER),
    )
    ctx.condition_at(who, day - pop.index[who], code, etype="wellness", stop_after=None)
    pop.evidence["has_family_history_record"] = family


def _failed_conservative_therapy(ctx: _Ctx) -> None:
    """A non-opioid analgesic started on/after index, then an opioid on a later day by day 42."""
    wanted = (
        draw_flag(ctx.rng, ctx.pop, ctx.p, "failed_conservative_therapy")
        & _plantable(ctx)
        & (ctx.hi >= 1)
    )
    who = np.flatnonzero(wanted)
    simple = ctx.days(np.zeros(who.size, np.int64), ctx.hi[who] - 1)
    opioid = ctx.days(simple + 1, ctx.hi[who])
    add_analgesics(ctx, who, simple, opioid)
    ctx.pop.flags["failed_conservative_therapy"] = wanted


def add_analgesics(ctx: _Ctx, who: np.ndarray, simple_day, opioid_day) -> None:
    """Prescriptions on index + day: a non-opioid (where simple_day is given) and an opioid (where opioid_day is)."""
    for days, codes in ((simple_day, cat.NON_OPIOID_ANALGESICS), (opioid_day, cat.OPIOIDS)):
        days = np.broadcast_to(np.asarray(days, dtype=np.float64), who.shape)
        keep = ~np.isnan(days)
        patients, day = who[keep], ctx.pop.index[who[keep]] + days[keep].astype(np.int64)
        enc = ctx.rec.add_encounters(patients, day, ENC["follow_up"])
        stop = ctx.stop_day(patients, day + ctx.days(np.full(patients.size, 7), 30))
        ctx.rec.add_medications(enc, ctx.rng.choice(code_ids(codes), size=patients.size), stop)


def _elevated_alp(ctx: _Ctx) -> None:
    """Alkaline phosphatase 160-420 U/L in the window, with the rest of a hepatic panel."""
    wanted = draw_flag(ctx.rng, ctx.pop, ctx.p, "elevated_alp") & _plantable(ctx) & (ctx.hi >= 0)
    who = np.flatnonzero(wanted)
    day = ctx.days(np.maximum(-30, ctx.lo[who]), ctx.hi[who])
    add_alp(ctx, who, day, np.round(ctx.rng.uniform(160, 420, who.size), 1))
    ctx.pop.flags["elevated_alp"] = wanted


def add_alp(ctx: _Ctx, who: np.ndarray, rel_day: np.ndarray, value) -> None:
    enc = ctx.rec.add_encounters(who, ctx.pop.index[who] + rel_day, ENC["problem"])
    ctx.rec.add_observations(enc, observable_id(cat.ALP), value)
    for obs in cat.HEPATIC_PANEL[1:]:
        ctx.rec.add_observations(enc, observable_id(obs), np.nan)


def _edge_records(ctx: _Ctx) -> None:
    """The extra back-pain records of the washout and pre-study scenarios."""
    pop = ctx.pop
    concept = pop.evidence["index_concept"]
    earlier = np.flatnonzero(pop.evidence["earlier_record"] < NEVER)
    stop = ctx.days(np.full(earlier.size, 5), 30)
    _back_pain_record(
        ctx,
        earlier,
        pop.evidence["earlier_record"][earlier] - pop.index[earlier],
        concept[earlier],
        stop,
    )
    # washout_index_moves: a later record inside the washout of the index
    moves = np.flatnonzero(pop.is_scenario("washout_index_moves"))
    later = ctx.days(np.full(moves.size, 60), np.minimum(300, ctx.fu[moves] - 1))
    _back_pain_record(ctx, moves, later, concept[moves], ctx.days(np.full(moves.size, 5), 30))


def _leakage(ctx: _Ctx) -> None:
    """Every flag's evidence recorded on or after the diagnosis (days d..42): none may fire."""
    pop = ctx.pop
    who = np.flatnonzero(pop.is_scenario("leakage"))
    d = pop.outcome[who] - pop.index[who]
    on_or_after = ctx.days(d, LANDMARK)
    ctx.condition_at(who, d, code_id(cat.NIGHT_PAIN))  # on the diagnosis day itself
    ctx.condition_at(who, on_or_after, ctx.rng.choice(code_ids(cat.NEURO_SYMPTOMS), size=who.size))
    ctx.condition_at(who, ctx.days(d, LANDMARK), code_id(cat.WEIGHT_LOSS))
    ctx.condition_at(who, ctx.days(d, LANDMARK), code_id(cat.SPINAL_TENDERNESS))
    add_alp(ctx, who, ctx.days(d, LANDMARK), np.round(ctx.rng.uniform(200, 420, who.size), 1))
    simple = ctx.days(d, LANDMARK - 1)
    add_analgesics(ctx, who, simple, ctx.days(simple + 1, LANDMARK))
    concept = pop.evidence["index_concept"]
    _back_pain_record(
        ctx, who, ctx.days(np.maximum(d, 28), LANDMARK), concept[who], np.zeros(who.size, np.int64)
    )
    pop.drop_day[who] = pop.outcome[who]
    pop.drop_fraction[who] = 0.12
    add_vitals(
        ctx.rec,
        np.r_[who, who],
        np.r_[pop.index[who] - ctx.days(np.full(who.size, 60), 300), pop.outcome[who]],
    )


def _decoys(ctx: _Ctx) -> None:
    """Near misses among non-diagnosed episodes without the flag: outside the window, ALP exactly
    at the limit, analgesics in the wrong order or on the same day."""
    pop, f = ctx.pop, ctx.p.decoy_fraction
    eligible = ctx.included & ~pop.is_scenario(*CASE_LIKE)
    after = ctx.fu > 205  # room for a record on days 60-200
    for flag, code in (
        ("night_pain", cat.NIGHT_PAIN),
        ("weight_loss", cat.WEIGHT_LOSS),
        ("spinal_tenderness", cat.SPINAL_TENDERNESS),
    ):
        who = np.flatnonzero(ctx.chance(eligible & ~pop.flags[flag] & after, f))
        ctx.condition_at(who, ctx.days(np.full(who.size, 60), 200), code_id(code))
    long_lookback = pop.first_day <= pop.index - 400
    who = np.flatnonzero(ctx.chance(eligible & ~pop.flags["neuro_symptoms"] & long_lookback, f))
    ctx.condition_at(
        who,
        -ctx.days(np.full(who.size, 380), np.minimum(700, pop.index[who] - pop.first_day[who])),
        code_id(cat.NEURO_SYMPTOMS[0]),
    )
    no_alp = eligible & ~pop.flags["elevated_alp"]
    who = np.flatnonzero(ctx.chance(no_alp & (ctx.hi >= 0), f))
    add_alp(
        ctx, who, ctx.days(np.zeros(who.size, np.int64), ctx.hi[who]), 147.0
    )  # not above the limit
    who = np.flatnonzero(ctx.chance(no_alp & after, f))
    add_alp(
        ctx,
        who,
        ctx.days(np.full(who.size, 60), 200),
        np.round(ctx.rng.uniform(200, 420, who.size), 1),
    )
    _analgesic_decoys(ctx, eligible & ~pop.flags["failed_conservative_therapy"] & (ctx.hi >= 1))
    bc_late = np.flatnonzero(
        ctx.chance(eligible & ~pop.flags["breast_cancer_history"] & (ctx.fu > 305), f / 5)
    )
    ctx.condition_at(
        bc_late,
        ctx.days(np.full(bc_late.size, 60), 300),
        code_id(cat.BREAST_CANCER),
        etype="problem",
        stop_after=None,
    )


def _analgesic_decoys(ctx: _Ctx, eligible: np.ndarray) -> None:
    """One pattern per episode: non-opioid only (common), same day, opioid first, non-opioid before index."""
    f = min(ctx.p.decoy_fraction, 0.2)
    kind = ctx.rng.choice(5, size=eligible.size, p=[1 - 0.3 - 3 * f, 0.3, f, f, f])
    who = np.flatnonzero(eligible & (kind > 0))
    k, hi = kind[who], ctx.hi[who]
    a = ctx.days(np.zeros(who.size, np.int64), hi - 1).astype(np.float64)
    b = ctx.days(a.astype(np.int64) + 1, hi).astype(np.float64)
    simple = np.select(
        [k == 1, k == 2, k == 3, k == 4], [a, a, b, -ctx.days(np.full(who.size, 1), 30)]
    )
    opioid = np.select([k == 1, k == 2, k == 3, k == 4], [np.nan, a, a, b])
    add_analgesics(ctx, who, simple, opioid)


def _imaging(ctx: _Ctx) -> None:
    """Spine imaging: before every diagnosis (days d-21..d-1), and for 12% of the others."""
    pop, rng = ctx.pop, ctx.rng
    case = ctx.included & pop.is_scenario(*CASE_LIKE)
    other = ctx.chance(ctx.included & ~case & (ctx.fu > 1), 0.12)
    d = pop.outcome - pop.index
    day = np.where(
        case,
        ctx.days(np.maximum(0, d - 21), np.maximum(0, d - 1)),
        ctx.days(np.zeros(pop.n, np.int64), np.clip(ctx.fu - 1, 0, 60)),
    )
    modality = np.where(
        case,
        rng.choice(4, size=pop.n, p=[0.15, 0.2, 0.5, 0.15]),
        rng.choice([0, 2], size=pop.n, p=[0.7, 0.3]),
    )
    who = np.flatnonzero(case | other)
    enc = ctx.rec.add_encounters(who, pop.index[who] + day[who], ENC["outpatient_procedure"])
    kinds = [cat.SPINE_IMAGING[m] for m in cat.IMAGING_MODALITIES]
    ctx.rec.add_procedures(enc, code_ids([k.procedure for k in kinds])[modality[who]])
    ctx.rec.add_imaging(enc, np.array([imaging_id(k) for k in kinds])[modality[who]])
    pop.evidence["imaging_day"] = np.where(case | other, pop.index + day, NEVER)
    pop.evidence["imaging_modality"] = np.where(case | other, modality, -1)


def _outcomes(ctx: _Ctx) -> None:
    """Bone-metastasis records: the diagnosis, a later repeat for half, and prevalent ones before index."""
    pop, rng = ctx.pop, ctx.rng
    snomed, icd = code_ids(cat.BONE_METASTASIS), code_id(cat.BONE_METASTASIS_ICD10)

    def codes(k: int) -> np.ndarray:
        code = rng.choice(snomed, size=k, p=[2 / 3, 1 / 3])
        return np.where(ctx.icd(np.ones(k, bool)), icd, code)

    who = np.flatnonzero(pop.outcome < NEVER)
    ctx.condition_at(
        who,
        pop.outcome[who] - pop.index[who],
        codes(who.size),
        etype="consultation",
        stop_after=None,
    )
    repeat_day = pop.outcome + ctx.days(np.full(pop.n, 7), 90)
    again = np.flatnonzero(
        (pop.outcome < NEVER) & (repeat_day <= pop.last_day) & (rng.random(pop.n) < 0.5)
    )
    ctx.condition_at(
        again,
        repeat_day[again] - pop.index[again],
        codes(again.size),
        etype="consultation",
        stop_after=None,
    )
    who = np.flatnonzero(pop.prevalent_day < NEVER)
    ctx.condition_at(
        who,
        pop.prevalent_day[who] - pop.index[who],
        codes(who.size),
        etype="consultation",
        stop_after=None,
    )
    pop.evidence["outcome_records"] = (
        (pop.outcome < NEVER).astype(int)
        + np.isin(np.arange(pop.n), again)
        + (pop.prevalent_day < NEVER)
    )


def _after_diagnosis(ctx: _Ctx) -> None:
    """Treatments and a skeletal-related event after the diagnosis (PROTOCOL 6.7-6.8).

    Drawn for every patient (so all layouts plant the same), kept for included diagnosed
    episodes. Records fall from the diagnosis day to 60 (SRE: 20) days after it, never after
    death or the last encounter, so every planted record is within the care window (90)
    and the SRE window (30). Planted values are in truth_episodes.csv.
    """
    pop, rng, p = ctx.pop, ctx.rng, ctx.p
    diagnosed = ctx.included & pop.is_scenario(*CASE_LIKE) & (pop.outcome < NEVER)
    relative = np.where(diagnosed, pop.outcome - pop.index, 0)
    latest = np.minimum(pop.last_day, pop.death) - pop.index

    def day_within(days: int) -> np.ndarray:
        return ctx.days(relative, np.maximum(relative, np.minimum(relative + days, latest)))

    for category in CARE_CATEGORIES:
        table, code = cat.CARE_CODES[category]
        given = diagnosed & (rng.random(pop.n) < getattr(p, f"care_{category}_rate"))
        day = day_within(60)
        who = np.flatnonzero(given)
        if table == "procedures":
            enc = ctx.rec.add_encounters(
                who, pop.index[who] + day[who], ENC["outpatient_procedure"]
            )
            ctx.rec.add_procedures(enc, np.full(who.size, code_id(code)))
        else:
            enc = ctx.rec.add_encounters(who, pop.index[who] + day[who], ENC["consultation"])
            stop = ctx.stop_day(who, pop.index[who] + day[who] + 14)
            ctx.rec.add_medications(enc, np.full(who.size, code_id(code)), stop)
        pop.evidence[f"planted_care_{category}"] = given
    logit = p.sre_logit_intercept + p.sre_log_odds_per_30_days * relative / 30
    sre = diagnosed & (rng.random(pop.n) < 1 / (1 + np.exp(-logit)))
    day = day_within(20)
    who = np.flatnonzero(sre)
    ctx.condition_at(
        who, day[who], np.full(who.size, code_id(cat.SPINAL_CORD_COMPRESSION)),
        etype="consultation", stop_after=None,
    )  # fmt: skip
    pop.evidence["planted_sre"] = sre
