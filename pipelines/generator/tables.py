"""Turn one chunk's integer rows into Arrow tables with Synthea's columns for a layout.

Rows are ordered as Synthea writes them: by patient, then time. Times of day, ids,
costs and demographic filler are drawn here; observation values that were left to draw
(NaN) get their catalog distribution, body weight its per-patient trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.generator import catalog as cat
from pipelines.generator import formatting as fmt
from pipelines.generator.catalog import ENCOUNTER_TYPES, ICD10_URL, SNOMED_URL
from pipelines.generator.layouts import LAYOUTS
from pipelines.generator.population import Population
from pipelines.generator.records import (
    CODES,
    DAY_SECONDS,
    IMAGING_KINDS,
    NEVER,
    OBSERVABLES,
    Tables,
)

_FIRST_F = (
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Nancy",
)
_FIRST_M = (
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
)
_LAST = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
)
_CITIES = (
    ("Boston", "Suffolk County", "25025"),
    ("Worcester", "Worcester County", "25027"),
    ("Springfield", "Hampden County", "25013"),
    ("Cambridge", "Middlesex County", "25017"),
    ("Lowell", "Middlesex County", "25017"),
    ("Quincy", "Norfolk County", "25021"),
    ("Lynn", "Essex County", "25009"),
    ("New Bedford", "Bristol County", "25005"),
)
_STREETS = (
    "Stehr Park",
    "Morar Fork",
    "Lind Course",
    "Altenwerth Orchard",
    "Doyle Row",
    "Stracke Plaza",
    "Keebler Estate",
    "Kub Way",
    "Heller Gate",
    "Torp Mill",
)
_RACES = ("white", "black", "asian", "native", "other")
_MARITAL = ("M", "S", "D", "W", "")
_DURATION_MINUTES = {"wellness": (15, 45), "emergency": (60, 180), "consultation": (30, 60)}


@dataclass(frozen=True)
class Pools:
    """Organisations, providers and payers shared by all chunks (fixed for a seed)."""

    organizations: np.ndarray
    providers: np.ndarray
    payers: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Pools:
        return cls(fmt.uuids(rng, 40), fmt.uuids(rng, 200), fmt.uuids(rng, 8))


@dataclass
class ChunkTables:
    """Arrow tables of one chunk, each with the global patient number of every row."""

    tables: dict[str, pa.Table]
    patient_rows: dict[str, np.ndarray]
    patient_ids: np.ndarray  # 'S36' per patient of the chunk


def build_tables(
    rng: np.random.Generator,
    pop: Population,
    rows: Tables,
    layout: str,
    pools: Pools,
    first_patient: int,
) -> ChunkTables:
    """All seven tables of the chunk in the layout's columns."""
    patient_ids = fmt.uuids(rng, pop.n)
    enc = _encounter_frame(rng, rows.encounters, pools, pop.n)
    columns = {
        "patients": (_patients(rng, pop, patient_ids), np.arange(pop.n)),
        "encounters": _encounters(rng, enc, patient_ids, pools),
        "conditions": _conditions(rows.conditions, enc, patient_ids),
        "observations": _observations(rng, rows.observations, enc, patient_ids, pop),
        "procedures": _procedures(rng, rows.procedures, enc, patient_ids),
        "medications": _medications(rng, rows.medications, enc, patient_ids, pools),
        "imaging_studies": _imaging(rng, rows.imaging_studies, enc, patient_ids),
    }
    tables, patient_rows = {}, {}
    for name, (builders, patient) in columns.items():
        names = LAYOUTS[layout][name]
        tables[name] = pa.table({c: builders[c]() for c in names})
        patient_rows[name] = patient + first_patient
    return ChunkTables(tables, patient_rows, patient_ids)


def radix_order(keys: np.ndarray) -> np.ndarray:
    """Stable sort order of non-negative integer keys below 2**32 (two 16-bit radix passes:
    several times faster than a comparison sort on millions of rows)."""
    keys = np.asarray(keys, dtype=np.int64)
    low = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((keys >> 16).astype(np.uint16)[low], kind="stable")]


def _encounter_frame(
    rng: np.random.Generator, e: dict[str, np.ndarray], pools: Pools, n_patients: int
) -> dict:
    """Times, ids and payers of the encounters, in the order they were added."""
    n = e["patient"].size
    start = e["day"] * DAY_SECONDS + rng.integers(8 * 3600, 16 * 3600, n)
    low = np.array([_DURATION_MINUTES.get(t.key, (15, 40))[0] for t in ENCOUNTER_TYPES])
    high = np.array([_DURATION_MINUTES.get(t.key, (15, 40))[1] for t in ENCOUNTER_TYPES])
    minutes = rng.integers(low[e["etype"]], high[e["etype"]] + 1)
    patient_payer = rng.integers(0, pools.payers.size, n_patients)
    order = np.lexsort((start, e["patient"]))  # Synthea's order: by patient, then time
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return {
        **e,
        "order": order,
        "rank": rank,
        "start": start,
        "stop": start + 60 * minutes,
        "id": fmt.uuids(rng, n),
        "payer": patient_payer[e["patient"]],
        "organization": rng.integers(0, pools.organizations.size, n),
        "provider": rng.integers(0, pools.providers.size, n),
    }


def _codes(index: np.ndarray) -> dict[str, Callable[[], pa.Array]]:
    """CODE, DESCRIPTION and SYSTEM columns of code-book entries."""
    codes = [c.code for c in CODES]
    descriptions = [c.description for c in CODES]
    systems = [ICD10_URL if c.system == "ICD10" else SNOMED_URL for c in CODES]
    return {
        "CODE": lambda: fmt.lookup(codes, index),
        "DESCRIPTION": lambda: fmt.lookup(descriptions, index),
        "SYSTEM": lambda: fmt.lookup(systems, index),
    }


def _reasons(index: np.ndarray) -> dict[str, Callable[[], pa.Array]]:
    codes = [c.code for c in CODES]
    descriptions = [c.description for c in CODES]
    return {
        "REASONCODE": lambda: fmt.lookup(codes, index),
        "REASONDESCRIPTION": lambda: fmt.lookup(descriptions, index),
    }


def _money(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    return np.round(rng.uniform(low, high, n), 2)


def _patients(rng: np.random.Generator, pop: Population, ids: np.ndarray) -> dict:
    n = pop.n
    city = rng.integers(0, len(_CITIES), n)
    first = np.where(pop.female, rng.integers(0, 10, n), 10 + rng.integers(0, 10, n))
    expenses, coverage = _money(rng, n, 1_000, 900_000), _money(rng, n, 0, 900_000)
    lat, lon = rng.uniform(41.3, 42.8, n), rng.uniform(70.0, 73.4, n)

    def number(low: int, high: int) -> pa.Array:
        return fmt.integers(rng.integers(low, high, n))

    return {
        "Id": lambda: fmt.fixed_width(ids),
        "BIRTHDATE": lambda: fmt.dates(pop.birth),
        "DEATHDATE": lambda: fmt.dates(pop.death, pop.death < NEVER),
        "SSN": lambda: fmt.concat(
            "999-",
            fmt.fixed_width(fmt.digits(rng.integers(0, 100, n), 2)),
            "-",
            fmt.fixed_width(fmt.digits(rng.integers(0, 10_000, n), 4)),
        ),
        "DRIVERS": lambda: fmt.concat(
            "S999", fmt.fixed_width(fmt.digits(rng.integers(0, 100_000, n), 5))
        ),
        "PASSPORT": lambda: fmt.concat(
            "X", fmt.fixed_width(fmt.digits(rng.integers(0, 10**8, n), 8)), "X"
        ),
        "PREFIX": lambda: fmt.lookup(
            ("Mr.", "Mrs.", "Ms."), np.where(pop.female, 1 + rng.integers(0, 2, n), 0)
        ),
        "FIRST": lambda: fmt.concat(fmt.lookup(_FIRST_F + _FIRST_M, first), number(1, 1000)),
        "MIDDLE": lambda: fmt.concat(
            fmt.lookup(_FIRST_F + _FIRST_M, (first + 3) % 20), number(1, 1000)
        ),
        "LAST": lambda: fmt.concat(
            fmt.lookup(_LAST, rng.integers(0, len(_LAST), n)), number(1, 1000)
        ),
        "SUFFIX": lambda: fmt.empty(n),
        "MAIDEN": lambda: fmt.empty(n),
        "MARITAL": lambda: fmt.lookup(_MARITAL, rng.integers(0, len(_MARITAL), n)),
        "RACE": lambda: fmt.lookup(
            _RACES, rng.choice(len(_RACES), n, p=[0.7, 0.1, 0.1, 0.02, 0.08])
        ),
        "ETHNICITY": lambda: fmt.lookup(
            ("nonhispanic", "hispanic"), (rng.random(n) < 0.12).astype(int)
        ),
        "GENDER": lambda: fmt.lookup(("M", "F"), pop.female.astype(int)),
        "BIRTHPLACE": lambda: fmt.concat(
            fmt.lookup([c[0] for c in _CITIES], rng.integers(0, len(_CITIES), n)),
            "  Massachusetts  US",
        ),
        "ADDRESS": lambda: fmt.concat(
            number(1, 1000), " ", fmt.lookup(_STREETS, rng.integers(0, len(_STREETS), n))
        ),
        "CITY": lambda: fmt.lookup([c[0] for c in _CITIES], city),
        "STATE": lambda: fmt.lookup(("Massachusetts",), np.zeros(n, int)),
        "COUNTY": lambda: fmt.lookup([c[1] for c in _CITIES], city),
        "FIPS": lambda: fmt.lookup([c[2] for c in _CITIES], city),
        "ZIP": lambda: fmt.concat("0", fmt.fixed_width(fmt.digits(rng.integers(1000, 2800, n), 4))),
        "LAT": lambda: fmt.decimals(lat, 6),
        "LON": lambda: fmt.concat("-", fmt.decimals(lon, 6)),
        "HEALTHCARE_EXPENSES": lambda: fmt.decimals(expenses, 2),
        "HEALTHCARE_COVERAGE": lambda: fmt.decimals(coverage, 2),
        "INCOME": lambda: number(10_000, 200_000),
    }


def _encounters(rng: np.random.Generator, enc: dict, patient_ids: np.ndarray, pools: Pools):
    order = enc["order"]
    e = {k: np.take(v, order) for k, v in enc.items() if k not in ("order", "rank")}
    n = order.size
    types = ENCOUNTER_TYPES
    base = np.array([t.base_cost for t in types])[e["etype"]]
    total = np.round(base + rng.uniform(0, 1500, n) * (rng.random(n) < 0.5), 2)
    covered = np.round(total * rng.uniform(0, 1, n), 2)
    builders = {
        "Id": lambda: fmt.fixed_width(e["id"]),
        "START": lambda: fmt.timestamps(e["start"]),
        "STOP": lambda: fmt.timestamps(e["stop"]),
        "PATIENT": lambda: fmt.take(patient_ids, e["patient"]),
        "ORGANIZATION": lambda: fmt.take(pools.organizations, e["organization"]),
        "PROVIDER": lambda: fmt.take(pools.providers, e["provider"]),
        "PAYER": lambda: fmt.take(pools.payers, e["payer"]),
        "ENCOUNTERCLASS": lambda: fmt.lookup([t.encounter_class for t in types], e["etype"]),
        "CODE": lambda: fmt.lookup([t.code for t in types], e["etype"]),
        "DESCRIPTION": lambda: fmt.lookup([t.description for t in types], e["etype"]),
        "BASE_ENCOUNTER_COST": lambda: fmt.decimals(base, 2),
        "COST": lambda: fmt.decimals(base, 2),
        "TOTAL_CLAIM_COST": lambda: fmt.decimals(total, 2),
        "PAYER_COVERAGE": lambda: fmt.decimals(covered, 2),
        **_reasons(e["reason"]),
    }
    return builders, e["patient"]


def _child(rows: dict[str, np.ndarray], enc: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows of a child table in their encounters' order (patient, time), with the encounter's fields."""
    order = radix_order(np.take(enc["rank"], rows["encounter"]))
    r = {k: np.take(v, order) for k, v in rows.items()}
    link = r["encounter"]
    fields = {k: np.take(enc[k], link) for k in ("patient", "start", "stop", "day", "payer")}
    return order, {**fields, "id": link, **r}


def _conditions(rows: dict, enc: dict, patient_ids: np.ndarray):
    _, c = _child(rows, enc)
    return {
        "START": lambda: fmt.dates(c["day"]),
        "STOP": lambda: fmt.dates(c["stop_day"], c["stop_day"] < NEVER),
        "PATIENT": lambda: fmt.take(patient_ids, c["patient"]),
        "ENCOUNTER": lambda: fmt.take(enc["id"], c["id"]),
        **_codes(c["code"]),
    }, c["patient"]


def _observation_values(rng: np.random.Generator, o: dict, pop: Population) -> np.ndarray:
    """Planted values as given; the rest drawn from each code's distribution or choices."""
    k = o["observable"]

    def spec(attr: str) -> np.ndarray:
        return np.take(np.array([getattr(x, attr) for x in OBSERVABLES], dtype=float), k)

    drawn = np.clip(rng.normal(spec("mean"), spec("sd")), spec("low"), spec("high"))
    drawn = np.where(spec("integer") > 0, np.rint(drawn), np.round(drawn, 1))
    choices = np.take(np.array([len(x.choices) for x in OBSERVABLES]), k)
    drawn = np.where(choices > 0, np.floor(rng.random(k.size) * np.maximum(choices, 1)), drawn)
    ids = {x: i for i, x in enumerate(OBSERVABLES)}
    body = np.flatnonzero(np.isin(k, [ids[cat.WEIGHT], ids[cat.HEIGHT], ids[cat.BMI]]))
    patient, kind = o["patient"][body], k[body]
    weight = pop.weight_at(patient, o["day"][body])
    height = np.round(pop.height[patient], 1)
    drawn[body] = np.select(
        [kind == ids[cat.WEIGHT], kind == ids[cat.HEIGHT]],
        [weight, height],
        np.round(weight / (height / 100) ** 2, 1),
    )
    return np.where(np.isnan(o["value"]), drawn, o["value"])


def _observations(
    rng: np.random.Generator, rows: dict, enc: dict, patient_ids: np.ndarray, pop: Population
):
    _, o = _child(rows, enc)
    value = _observation_values(rng, o, pop)
    k = o["observable"]
    text_offset = np.cumsum([0] + [len(x.choices) for x in OBSERVABLES])
    is_text = np.array([x.is_text for x in OBSERVABLES])[k]
    texts = [c for x in OBSERVABLES for c in x.choices]

    def value_column() -> pa.Array:
        numbers = fmt.decimals(np.where(is_text, 0.0, value), 1)
        words = fmt.lookup(texts, np.where(is_text, text_offset[k] + value.astype(np.int64), 0))
        return pc.if_else(pa.array(is_text), fmt.as_strings(words), numbers)

    with_encounter = o["has_encounter"].astype(bool)
    return {
        "DATE": lambda: fmt.timestamps(o["start"]),
        "PATIENT": lambda: fmt.take(patient_ids, o["patient"]),
        "ENCOUNTER": lambda: fmt.take(enc["id"], o["id"], with_encounter),
        "CATEGORY": lambda: fmt.lookup(
            [x.category for x in OBSERVABLES], np.where(_has_category(k), k, -1)
        ),
        "CODE": lambda: fmt.lookup([x.code for x in OBSERVABLES], k),
        "DESCRIPTION": lambda: fmt.lookup([x.description for x in OBSERVABLES], k),
        "VALUE": value_column,
        "UNITS": lambda: fmt.lookup([x.units for x in OBSERVABLES], np.where(_has_units(k), k, -1)),
        "TYPE": lambda: fmt.lookup(("numeric", "text"), is_text.astype(int)),
    }, o["patient"]


def _has_category(k: np.ndarray) -> np.ndarray:
    return np.array([bool(x.category) for x in OBSERVABLES])[k]


def _has_units(k: np.ndarray) -> np.ndarray:
    return np.array([bool(x.units) for x in OBSERVABLES])[k]


def _procedures(rng: np.random.Generator, rows: dict, enc: dict, patient_ids: np.ndarray):
    _, p = _child(rows, enc)
    n = p["patient"].size
    start = p["start"] + rng.integers(0, 600, n)
    cost = _money(rng, n, 50, 650)
    return {
        "START": lambda: fmt.timestamps(start),
        "DATE": lambda: fmt.timestamps(start),
        "STOP": lambda: fmt.timestamps(start + 60 * rng.integers(5, 40, n)),
        "PATIENT": lambda: fmt.take(patient_ids, p["patient"]),
        "ENCOUNTER": lambda: fmt.take(enc["id"], p["id"]),
        **_codes(p["code"]),
        "BASE_COST": lambda: fmt.decimals(cost, 2),
        "COST": lambda: fmt.decimals(cost, 2),
        **_reasons(p["reason"]),
    }, p["patient"]


def _medications(
    rng: np.random.Generator, rows: dict, enc: dict, patient_ids: np.ndarray, pools: Pools
):
    _, m = _child(rows, enc)
    n = m["patient"].size
    has_stop = m["stop_day"] < NEVER
    stop = m["stop_day"] * DAY_SECONDS + m["start"] % DAY_SECONDS
    cost, dispenses = _money(rng, n, 1, 300), rng.integers(1, 13, n)
    total = np.round(cost * dispenses, 2)
    return {
        "START": lambda: fmt.timestamps(m["start"]),
        "STOP": lambda: fmt.timestamps(stop, has_stop),
        "PATIENT": lambda: fmt.take(patient_ids, m["patient"]),
        "PAYER": lambda: fmt.take(pools.payers, m["payer"]),
        "ENCOUNTER": lambda: fmt.take(enc["id"], m["id"]),
        **_codes(m["code"]),
        "BASE_COST": lambda: fmt.decimals(cost, 2),
        "COST": lambda: fmt.decimals(cost, 2),
        "PAYER_COVERAGE": lambda: fmt.decimals(np.round(total * rng.uniform(0, 1, n), 2), 2),
        "DISPENSES": lambda: fmt.integers(dispenses),
        "TOTALCOST": lambda: fmt.decimals(total, 2),
        **_reasons(m["reason"]),
    }, m["patient"]


def _imaging(rng: np.random.Generator, rows: dict, enc: dict, patient_ids: np.ndarray):
    _, i = _child(rows, enc)
    n, k = i["patient"].size, i["kind"]
    kinds = IMAGING_KINDS
    series, instance = rng.integers(10**7, 10**8, n), rng.integers(10**7, 10**8, n)
    millis = i["start"] * 1000 + 469
    return {
        "Id": lambda: fmt.fixed_width(fmt.uuids(rng, n)),
        "DATE": lambda: fmt.timestamps(i["start"]),
        "PATIENT": lambda: fmt.take(patient_ids, i["patient"]),
        "ENCOUNTER": lambda: fmt.take(enc["id"], i["id"]),
        "SERIES_UID": lambda: fmt.concat(
            "1.2.840.99999999.1.", fmt.integers(series), ".", fmt.integers(millis)
        ),
        "BODYSITE_CODE": lambda: fmt.lookup([x.body_site_code for x in kinds], k),
        "BODYSITE_DESCRIPTION": lambda: fmt.lookup([x.body_site_description for x in kinds], k),
        "MODALITY_CODE": lambda: fmt.lookup([x.modality_code for x in kinds], k),
        "MODALITY_DESCRIPTION": lambda: fmt.lookup([x.modality_description for x in kinds], k),
        "INSTANCE_UID": lambda: fmt.concat(
            "1.2.840.99999999.1.1.", fmt.integers(instance), ".", fmt.integers(millis)
        ),
        "SOP_CODE": lambda: fmt.lookup([x.sop_code for x in kinds], k),
        "SOP_DESCRIPTION": lambda: fmt.lookup([x.sop_description for x in kinds], k),
        "PROCEDURE_CODE": lambda: fmt.lookup([x.procedure.code for x in kinds], k),
    }, i["patient"]
