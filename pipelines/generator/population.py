"""Who the patients of one chunk are: scenario, dates of birth, index, outcome, death, observation.

Everything is a numpy array over the chunk's patients. Days are integers (days since
1970-01-01); `NEVER` stands for "no such date". Timing rules that keep the planted truth
unambiguous (no event within 2 days of the landmark, none within 5 days of the horizon,
no Feb-29 birthdays, no washout gap of exactly 365 days) are explained in docs/generator.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from pipelines.generator.catalog import CHRONIC_CONDITIONS
from pipelines.generator.params import EDGE_SCENARIOS, SCENARIOS, PlantedParameters
from pipelines.generator.records import NEVER

SCENARIO_ID = {name: i for i, name in enumerate(SCENARIOS)}
EPOCH = dt.date(1970, 1, 1)
LANDMARK, HORIZON = 42, 365  # protocol defaults the planted truth is stated for
CASE_LIKE = ("case", "leakage")
NO_INCIDENT = ("washout_not_incident", "pre_study_only")
EXCLUDED_STEP = {
    "minor": "age",
    "short_lookback": "lookback",
    "prevalent_metastasis": "no_prevalent_outcome",
}
FOLLOWED_TO_EXTRACT = (  # alive and observed until near the extract date
    "control",
    "washout_index_moves",
    "prior_episode_outside_washout",
    "turns_18_on_index",
    "lookback_exactly_365",
    "early_repeat_visits",
    "repeat_on_day_28",
    "outcome_after_horizon",
    "minor",
    "short_lookback",
    "prevalent_metastasis",
    "washout_not_incident",
    "pre_study_only",
)


def day_number(d: dt.date) -> int:
    return (d - EPOCH).days


@dataclass
class Population:
    """Per-patient plan of one chunk; planting fills the flag and evidence fields."""

    scenario: np.ndarray
    female: np.ndarray
    birth: np.ndarray
    death: np.ndarray
    first_day: np.ndarray  # first encounter
    last_day: np.ndarray  # last encounter
    index: np.ndarray  # planted index date (NEVER without an incident episode)
    age: np.ndarray  # completed years at index
    outcome: np.ndarray  # first bone-metastasis record after index (NEVER: none)
    prevalent_day: np.ndarray  # bone-metastasis record on/before index (prevalent scenario)
    prior_record: np.ndarray  # back-pain record before study start, > 365 days before index
    chronic: np.ndarray  # (n, len(CHRONIC_CONDITIONS)) bool
    height: np.ndarray
    weight: np.ndarray  # base body weight (kg)
    weight_amplitude: np.ndarray  # drift amplitude, < 1% so max/min stays < 2%
    weight_phase: np.ndarray
    weight_period: np.ndarray  # days
    drop_day: np.ndarray  # planted measured weight loss from this day on (NEVER: none)
    drop_fraction: np.ndarray
    stratum: np.ndarray = (
        None  # landmark_stratum(): 0 outside, 1 non-case, 2 case in the population
    )
    flags: dict[str, np.ndarray] = field(default_factory=dict)  # planted flag values (final)
    evidence: dict[str, np.ndarray] = field(default_factory=dict)  # extra truth columns

    @property
    def n(self) -> int:
        return self.scenario.size

    def is_scenario(self, *names: str) -> np.ndarray:
        return np.isin(self.scenario, [SCENARIO_ID[s] for s in names])

    def weight_at(self, patient: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Body weight (kg, one decimal) on a day: base, slow drift, planted drop."""
        drift = self.weight_amplitude[patient] * np.sin(
            2 * np.pi * day / self.weight_period[patient] + self.weight_phase[patient]
        )
        dropped = np.where(day >= self.drop_day[patient], 1 - self.drop_fraction[patient], 1.0)
        return np.round(self.weight[patient] * (1 + drift) * dropped, 1)


def uniform_days(rng: np.random.Generator, low, high) -> np.ndarray:
    """Whole days uniformly in [low, high], element-wise (inclusive)."""
    return rng.integers(np.asarray(low), np.asarray(high) + 1).astype(np.int64)


def avoiding_landmark(rng: np.random.Generator, n: int) -> np.ndarray:
    """Days 1..360 except 40..44, so no event sits on the landmark (day 42) boundary."""
    d = rng.integers(1, 356, size=n)
    return np.where(d >= 40, d + 5, d).astype(np.int64)


def civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of day numbers."""
    d = np.asarray(days).astype("datetime64[D]")
    y = d.astype("datetime64[Y]")
    m = d.astype("datetime64[M]")
    return (
        y.astype(int) + 1970,
        (m - y.astype("datetime64[M]")).astype(int) + 1,
        (d - m.astype("datetime64[D]")).astype(int) + 1,
    )


def from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    months = (np.asarray(year) - 1970) * 12 + np.asarray(month) - 1
    return (months.astype("datetime64[M]").astype("datetime64[D]") + (np.asarray(day) - 1)).astype(
        np.int64
    )


def completed_years(birth: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Age in completed years (birthday counted on the day itself)."""
    by, bm, bd = civil(birth)
    oy, om, od = civil(on)
    return oy - by - ((om < bm) | ((om == bm) & (od < bd))).astype(int)


def allocate_scenarios(rng: np.random.Generator, n: int, p: PlantedParameters) -> np.ndarray:
    """Scenario of each patient: fixed counts per edge case, drawn regular episodes, background."""
    per_edge = int(round(p.edge_case_fraction * n))
    if n >= 200 and p.edge_case_fraction > 0:
        per_edge = max(per_edge, 2)
    per_edge = min(per_edge, n // (2 * len(EDGE_SCENARIOS)))
    n_regular = min(int(round(p.episode_fraction * n)), n - per_edge * len(EDGE_SCENARIOS))
    non_case = np.array([1 - p.death_fraction - p.lost_fraction, p.death_fraction, p.lost_fraction])
    regular = np.where(
        rng.random(n_regular) < p.case_fraction,
        SCENARIO_ID["case"],
        rng.choice(
            [SCENARIO_ID[s] for s in ("control", "death", "lost_to_follow_up")],
            size=n_regular,
            p=non_case,
        ),
    )
    edges = np.repeat([SCENARIO_ID[s] for s in EDGE_SCENARIOS], per_edge)
    background = np.full(n - n_regular - edges.size, SCENARIO_ID["background"])
    return rng.permutation(np.concatenate([regular, edges, background]).astype(np.int8))


def plan_population(rng: np.random.Generator, n: int, p: PlantedParameters) -> Population:
    """The chunk's patients with every date the scenarios fix; flags are planted later."""
    scenario = allocate_scenarios(rng, n, p)
    pop = _empty_population(rng, scenario)
    extract, start = day_number(p.extract_date), day_number(p.study_start_date)
    _plan_index(rng, pop, start, extract)
    _plan_events(rng, pop, p, extract)
    pop.stratum = landmark_stratum(pop)
    pop.flags["age_50_plus"] = draw_flag(
        rng, pop, p, "age_50_plus", forced_false=pop.is_scenario("turns_18_on_index")
    )
    pop.flags["breast_cancer_history"] = draw_flag(
        rng, pop, p, "breast_cancer_history", forced_true=pop.is_scenario("prevalent_metastasis")
    )
    _plan_birth(rng, pop, extract)
    _plan_sex(rng, pop, p)
    _plan_observation(rng, pop, start, extract)
    return pop


def _empty_population(rng: np.random.Generator, scenario: np.ndarray) -> Population:
    n = scenario.size
    never = np.full(n, NEVER, dtype=np.int64)
    chronic = rng.random((n, len(CHRONIC_CONDITIONS))) < np.array(
        [share for _, share in CHRONIC_CONDITIONS]
    )
    return Population(
        scenario=scenario,
        female=np.zeros(n, bool),
        birth=never.copy(),
        death=never.copy(),
        first_day=never.copy(),
        last_day=never.copy(),
        index=never.copy(),
        age=np.zeros(n, np.int64),
        outcome=never.copy(),
        prevalent_day=never.copy(),
        prior_record=never.copy(),
        chronic=chronic,
        height=np.zeros(n),
        weight=np.zeros(n),
        weight_amplitude=rng.uniform(0.0, 0.009, n),
        weight_phase=rng.uniform(0, 2 * np.pi, n),
        weight_period=rng.uniform(3 * 365, 8 * 365, n),
        drop_day=never.copy(),
        drop_fraction=np.zeros(n),
    )


def _plan_index(rng: np.random.Generator, pop: Population, start: int, extract: int) -> None:
    """Index day of every back-pain scenario (for the no-incident ones: the non-incident record)."""
    n = pop.n
    latest = extract - 180 - HORIZON - 60  # follow-up to the horizon fits before the last encounter
    index = uniform_days(rng, start + 30, np.full(n, latest))
    late = pop.is_scenario("outcome_after_horizon")
    index[late] = uniform_days(rng, start + 30, np.full(late.sum(), extract - 180 - 700 - 30))
    prior = pop.is_scenario("prior_episode_outside_washout")
    pop.prior_record[prior] = start - uniform_days(rng, np.ones(prior.sum(), np.int64), 370)
    index[prior] = pop.prior_record[prior] + uniform_days(rng, np.full(prior.sum(), 400), 1500)
    needs_birthday = pop.is_scenario("turns_18_on_index", "minor")
    _, month, day = civil(index + 1)
    index[needs_birthday & (month == 2) & (day >= 28)] += 3  # keep index and index+1 off Feb 29
    pop.index = np.where(pop.is_scenario("background"), NEVER, index)


def _plan_events(
    rng: np.random.Generator, pop: Population, p: PlantedParameters, extract: int
) -> None:
    """Outcome, death and loss to follow-up, relative to the index day."""
    n = pop.n
    case = pop.is_scenario("case")
    pop.outcome[case] = pop.index[case] + _time_to_diagnosis(rng, case.sum(), p)
    leak = pop.is_scenario("leakage")
    pop.outcome[leak] = pop.index[leak] + uniform_days(rng, np.full(leak.sum(), 10), 40)
    late = pop.is_scenario("outcome_after_horizon")
    pop.outcome[late] = pop.index[late] + uniform_days(rng, np.full(late.sum(), HORIZON + 15), 700)
    prevalent = pop.is_scenario("prevalent_metastasis")
    before = np.where(rng.random(n) < 0.2, 0, uniform_days(rng, np.ones(n, np.int64), 400))
    pop.prevalent_day[prevalent] = pop.index[prevalent] - before[prevalent]
    died = pop.is_scenario("death")
    pop.death[died] = pop.index[died] + avoiding_landmark(rng, died.sum())
    lost = pop.is_scenario("lost_to_follow_up")
    pop.last_day[lost] = pop.index[lost] + avoiding_landmark(rng, lost.sum())
    # Survival after diagnosis (PROTOCOL 6.8): exponential, hazard rising with the diagnostic
    # interval by the planted hazard ratio per 30 days; at least a day after the diagnosis
    diagnosed = case | leak
    pop.death[diagnosed] = pop.outcome[diagnosed] + survival_days(
        rng, pop.outcome[diagnosed] - pop.index[diagnosed], p
    )
    pop.death[pop.death > extract] = NEVER


def survival_days(
    rng: np.random.Generator, interval: np.ndarray, p: PlantedParameters
) -> np.ndarray:
    """Days from diagnosis to death: exponential with rate ln 2 / median x HR^(interval / 30)."""
    rate = (
        np.log(2)
        / p.survival_median_days
        * np.exp(p.survival_log_hr_per_30_days * np.asarray(interval, dtype=float) / 30)
    )
    return 1 + np.floor(rng.exponential(1 / rate)).astype(np.int64)


def _time_to_diagnosis(rng: np.random.Generator, n: int, p: PlantedParameters) -> np.ndarray:
    """Lognormal days to diagnosis, redrawn until in 1..360 and off the landmark (40..44)."""
    days = np.zeros(n, np.int64)
    todo = np.ones(n, bool)
    while todo.any():
        draw = np.rint(
            rng.lognormal(np.log(p.diagnosis_median_days), p.diagnosis_sigma, todo.sum())
        ).astype(np.int64)
        days[todo] = draw
        todo = (days < 1) | (days > HORIZON - 5) | ((days >= 40) & (days <= 44))
    return days


def is_reference_case(pop: Population) -> np.ndarray:
    """Episodes whose planted flags follow the sensitivity (diagnosed within the horizon)."""
    return pop.is_scenario(*CASE_LIKE)


def landmark_stratum(pop: Population) -> np.ndarray:
    """0: outside the landmark population with a known reference standard; 1: in it, not
    diagnosed within the horizon; 2: in it, diagnosed (the same rules as truth.episode_truth)."""
    included = (pop.index < NEVER) & ~pop.is_scenario("background", *NO_INCIDENT, *EXCLUDED_STEP)
    landmark, horizon = pop.index + LANDMARK, pop.index + HORIZON
    diagnosed = pop.outcome <= horizon
    observed_to = np.where(
        pop.death < NEVER, pop.death, pop.last_day
    )  # last_day not yet set: NEVER
    in_population = included & ~(diagnosed & (pop.outcome <= landmark)) & (pop.death > landmark)
    in_population &= observed_to >= landmark
    known = diagnosed | (pop.death <= horizon) | (observed_to >= horizon)
    return np.where(in_population & known, np.where(diagnosed, 2, 1), 0)


def draw_flag(
    rng: np.random.Generator,
    pop: Population,
    p: PlantedParameters,
    flag: str,
    forced_true: np.ndarray | None = None,
    forced_false: np.ndarray | None = None,
) -> np.ndarray:
    """Planted flag values: within the landmark population (per chunk) exactly round(rate * n)
    episodes of each reference class carry the flag, scenario-forced values included; elsewhere
    independent draws at the same rates."""
    rate = p.flags[flag]
    forced_true = np.zeros(pop.n, bool) if forced_true is None else forced_true
    forced_false = np.zeros(pop.n, bool) if forced_false is None else forced_false
    chance = np.where(is_reference_case(pop), rate.sensitivity, 1 - rate.specificity)
    values = (rng.random(pop.n) < chance) & (pop.index < NEVER)
    for stratum, share in ((1, 1 - rate.specificity), (2, rate.sensitivity)):
        members = np.flatnonzero(pop.stratum == stratum)
        free = members[~forced_true[members] & ~forced_false[members]]
        wanted = int(round(share * members.size)) - int(forced_true[members].sum())
        values[members] = False
        values[rng.permutation(free)[: min(max(wanted, 0), free.size)]] = True
    return (values | forced_true) & ~forced_false


def _plan_birth(rng: np.random.Generator, pop: Population, extract: int) -> None:
    """Birth dates: exact completed years at index, no birthday within 30 days of it."""
    n = pop.n
    age = np.where(pop.flags["age_50_plus"], rng.integers(50, 91, n), rng.integers(18, 50, n))
    age[pop.is_scenario("minor")] = rng.integers(14, 18, pop.is_scenario("minor").sum())
    pop.age = age
    birth = (
        pop.index
        - np.rint(age * 365.2425).astype(np.int64)
        - uniform_days(rng, np.full(n, 30), 330)
    )
    y, m, d = civil(pop.index)
    exact = pop.is_scenario("turns_18_on_index")
    birth[exact] = from_civil(y[exact] - 18, m[exact], d[exact])
    pop.age[exact] = 18
    tomorrow = pop.is_scenario("minor") & (
        rng.random(n) < 0.25
    )  # 18th birthday the day after index
    ty, tm, td = civil(pop.index + 1)
    birth[tomorrow] = from_civil(ty[tomorrow] - 18, tm[tomorrow], td[tomorrow])
    pop.age[tomorrow] = 17
    bg = pop.is_scenario("background")
    birth[bg] = extract - rng.integers(18 * 365, 95 * 365, bg.sum())
    _, bm, bd = civil(birth)
    birth -= ((bm == 2) & (bd == 29)).astype(np.int64)  # no Feb-29 birthdays: ages are unambiguous
    pop.birth = birth


def _plan_sex(rng: np.random.Generator, pop: Population, p: PlantedParameters) -> None:
    chance = np.where(
        pop.is_scenario(*CASE_LIKE, "prevalent_metastasis"),
        p.female_fraction_cases,
        p.female_fraction_others,
    )
    chance = np.where(pop.flags["breast_cancer_history"], 0.99, chance)
    pop.female = rng.random(pop.n) < chance


def _plan_observation(rng: np.random.Generator, pop: Population, start: int, extract: int) -> None:
    """First and last encounter, deaths, and body size."""
    n = pop.n
    first = pop.index - uniform_days(rng, np.full(n, 400), 3000)
    short = pop.is_scenario("short_lookback")
    first[short] = pop.index[short] - np.where(
        rng.random(short.sum()) < 0.25, 364, uniform_days(rng, np.full(short.sum(), 30), 363)
    )
    exact = pop.is_scenario("lookback_exactly_365")
    first[exact] = pop.index[exact] - 365
    prevalent = pop.is_scenario("prevalent_metastasis")
    first[prevalent] = np.minimum(first[prevalent], pop.prevalent_day[prevalent] - 30)
    bg = pop.is_scenario("background")
    first[bg] = extract - uniform_days(rng, np.full(bg.sum(), 5 * 365), 12 * 365)
    pop.first_day = np.maximum(first, pop.birth + 30)
    pop.first_day[short | exact] = first[short | exact]  # these must keep their exact lookback
    _plan_last_day(rng, pop, extract)
    male = ~pop.female
    pop.height = np.clip(rng.normal(np.where(male, 176.0, 163.0), 7.0), 145.0, 200.0)
    pop.weight = np.clip(rng.normal(np.where(male, 85.0, 70.0), 12.0), 45.0, 130.0)


def _plan_last_day(rng: np.random.Generator, pop: Population, extract: int) -> None:
    n = pop.n
    open_ended = pop.is_scenario(*FOLLOWED_TO_EXTRACT, *CASE_LIKE, "background")
    last = extract - uniform_days(rng, np.zeros(n, np.int64), 180)
    bg_death = pop.is_scenario("background") & (rng.random(n) < 0.06)
    pop.death[bg_death] = uniform_days(
        rng, pop.first_day[bg_death] + 30, np.full(bg_death.sum(), extract)
    )
    late_death = pop.is_scenario("control") & (rng.random(n) < 0.05)  # dies after the horizon
    pop.death[late_death] = uniform_days(
        rng, pop.index[late_death] + HORIZON + 30, np.full(late_death.sum(), extract)
    )
    dead = pop.death < NEVER
    last = np.where(dead, pop.death, last)
    pop.last_day = np.where(open_ended | pop.is_scenario("death"), last, pop.last_day)
    if n and open_ended.any() and not dead[open_ended].all():
        # The export's latest date is the planted extract date (the protocol's default observation cap).
        first_open = np.flatnonzero(open_ended & ~dead)[0]
        pop.last_day[first_open] = extract
