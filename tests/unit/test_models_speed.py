"""The SQL models' cost at scale (issue 16): plan shapes that keep large scans cheap, with the
same rows (docs/benchmark.md, "Stages after the ingest")."""

from __future__ import annotations

import json
from collections.abc import Iterator

from model_spec import build_study

OBSERVATIONS = (
    "patient_id | observed_at | code | value | units\n"
    " p1 | 2015-06-01 10:00:00 | 29463-7 | 150 | [lb_av]\n"
    " p1 | 2015-06-02 10:00:00 | 29463-7 | 70 | KG \n"
    " p1 | 2015-06-03 10:00:00 | 8302-2 | 170 | cm\n"
    " p1 | 2015-06-04 10:00:00 | 8302-2 | 170 |"
)


def _join_conditions(node: dict) -> Iterator[str]:
    found = node.get("extra_info", {}).get("Conditions")
    if found:
        yield from [found] if isinstance(found, str) else found
    for child in node.get("children", []):
        yield from _join_conditions(child)


def test_an_observation_unit_is_normalised_only_for_codes_with_a_conversion():
    """stg_synthea__observations joins meta.unit_conversions on (code, unit): the unit key,
    lower(trim(units)), is computed only for the codes that have a conversion, not for every
    observation (at 100k, 21M rows, most of the view's cost in int_data_extract_date)."""
    con = build_study(
        patients="patient_id | birth_date | sex\n p1 | 1960-05-01 | F",
        encounters="encounter_id | patient_id | start_at\n e0 | p1 | 2014-01-10 09:00:00",
        observations=OBSERVATIONS,
    )
    plan = json.loads(
        con.execute(
            "EXPLAIN (FORMAT JSON) SELECT * FROM staging.stg_synthea__observations"
        ).fetchall()[0][1]
    )
    unit_keys = [c for n in plan for c in _join_conditions(n) if "lower(" in c]
    assert unit_keys, "no join on the normalised unit"
    assert all(c.startswith("unit = CASE") for c in unit_keys), unit_keys
    # the same values as before: pounds converted, kilograms kept, other codes' units kept
    rows = con.execute(
        "SELECT code, value_number, units FROM staging.stg_synthea__observations ORDER BY observed_at"
    ).fetchall()
    assert [(c, float(v), u) for c, v, u in rows] == [
        ("29463-7", 68.0389, "kg"),
        ("29463-7", 70.0, "kg"),
        ("8302-2", 170.0, "cm"),
        ("8302-2", 170.0, None),
    ]
