"""Value sets and code systems: files valid, loaded, hashed; spellings and code forms canonical."""

from __future__ import annotations

import hashlib
import logging
import shutil

import duckdb
import pytest

from pipelines import codesystems, valuesets
from pipelines.valuesets import ValueSetError, load_value_sets, read_value_sets, value_set_hashes

CONCEPTS = {
    "back_pain",
    "bone_metastasis",
    "bone_metastasis_supporting",
    "night_pain",
    "weight_loss_coded",
    "body_weight",
    "neuro_symptoms",
    "spinal_tenderness",
    "breast_cancer",
    "non_opioid_analgesic",
    "opioid",
    "alkaline_phosphatase",
    "spine_imaging_xray",
    "spine_imaging_ct",
    "spine_imaging_mri",
    "spine_imaging_bone_scan",
    "spine_body_site",
    "other_cancer",
    "osteoporosis",
    "vertebral_fracture",
    "skeletal_related_event",
    "chemotherapy",
    "endocrine_therapy",
    "targeted_therapy",
    "radiotherapy",
    "bone_targeted_agent",
    "neuropathic_agent",
    "corticosteroid",
    "bone_biopsy",
    "surgical_stabilisation",
}


def codes(concept: str) -> set[str]:
    return {r.code for r in read_value_sets() if r.concept == concept}


def test_every_study_concept_has_a_value_set_and_every_row_is_valid():
    rows = read_value_sets()
    assert {r.concept for r in rows} == CONCEPTS
    assert all(r.match in ("exact", "prefix") and r.description for r in rows)


def test_care_procedures_have_their_snomed_codes():
    assert codes("bone_biopsy") == {"13861005"}
    assert {"392010000", "429616001", "55705006", "387731002"} == codes("surgical_stabilisation")


def test_the_protocol_codes_are_in_their_value_sets():
    assert {"94222008", "94602001", "C7951", "C7952"} == codes("bone_metastasis")
    assert {"254837009", "C50", "Z853"} <= codes("breast_cancer")
    assert {"279039007", "161891005", "278860009", "M545"} <= codes("back_pain")
    assert {"856987", "1049625"} <= codes("opioid") and {"206905", "209387", "313782"} <= codes(
        "non_opioid_analgesic"
    )
    assert codes("body_weight") == {"29463-7"} and codes("alkaline_phosphatase") == {"6768-6"}
    assert codes("spinal_tenderness") == {"298695003"}


def test_family_history_codes_are_in_no_value_set():
    everything = {r.code for r in read_value_sets()}
    assert "429740004" not in everything and "Z803" not in everything


def test_prefix_matching_is_explicit():
    prefixes = {(r.concept, r.code) for r in read_value_sets() if r.match == "prefix"}
    assert ("breast_cancer", "C50") in prefixes and ("back_pain", "M545") in prefixes


def test_the_value_sets_load_into_the_warehouse_with_the_code_system_tables():
    con = duckdb.connect()
    n = load_value_sets(con)
    assert (
        n
        == con.execute("select count(*) from meta.value_sets").fetchone()[0]
        == len(read_value_sets())
    )
    assert con.execute(
        "select code_system from meta.code_system_aliases where alias = 'SNOMED-CT'"
    ).fetchone() == ("SNOMED",)
    assert con.execute(
        "select code_system from meta.code_system_defaults where table_name = 'medications'"
    ).fetchone() == ("RXNORM",)


def test_value_set_hashes_cover_every_file():
    hashes = value_set_hashes()
    assert set(hashes) == {p.stem for p in valuesets.value_set_files()} | {"versions", "flags"}
    assert all(len(h) == 64 for h in hashes.values())


def test_a_bad_value_set_file_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "versions.csv").write_text("value_set,version,updated\nbad,1,2026-01-01\n")
    monkeypatch.setattr(valuesets, "FOLDER", tmp_path)
    monkeypatch.setattr(valuesets, "VERSIONS_FILE", tmp_path / "versions.csv")
    bad = tmp_path / "bad.csv"
    header = "concept,code_system,code,match,description\n"
    for body, message in (
        ("x,SNOMED-CT,1,exact,d\n", "canonical name"),
        ("x,SNOMED,1,fuzzy,d\n", "exact or prefix"),
        ("x,SNOMED,1,exact,d\nx,SNOMED,1,exact,d\n", "duplicate"),
        ("x,ICD10CM,C50,prefix,d\nx,ICD10CM,C50.9,exact,d\n", "already covered"),
    ):
        bad.write_text(header + body)
        with pytest.raises(ValueSetError, match=message):
            read_value_sets()


def test_a_value_set_without_a_versions_row_loads_as_unreviewed_named_by_its_hash(
    tmp_path, monkeypatch, caplog
):
    # a new value set needs no edit of versions.csv (docs/value-sets.md, "Versions"), and a
    # run still says which content it used: the version names the file's hash
    for path in [*valuesets.value_set_files(), valuesets.VERSIONS_FILE]:
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(valuesets, "FOLDER", tmp_path)
    monkeypatch.setattr(valuesets, "VERSIONS_FILE", tmp_path / "versions.csv")
    new = tmp_path / "example.csv"
    new.write_text(
        "concept,code_system,code,match,description\nexample,SNOMED,386661006,exact,Fever\n"
    )
    sha = hashlib.sha256(new.read_bytes()).hexdigest()

    con = duckdb.connect()
    with caplog.at_level(logging.WARNING, logger="pipelines.valuesets"):
        load_value_sets(con)
    versions = dict(
        con.execute("select distinct value_set, version from meta.value_sets").fetchall()
    )
    assert versions["example"] == f"unreviewed (sha256 {sha[:12]})"
    assert versions["back_pain"] == "1 (2026-11-23)"  # a reviewed one keeps versions.csv's row
    assert "value set example has no row in versions.csv" in caplog.text
    assert valuesets.unreviewed_value_sets() == ["example"]
    assert value_set_hashes()["example"] == sha  # the run record (meta.runs.value_set_hashes)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("SNOMED-CT", "SNOMED"),
        ("http://snomed.info/sct", "SNOMED"),
        ("snomed", "SNOMED"),
        ("ICD-10-CM", "ICD10CM"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "ICD10CM"),
        ("http://loinc.org", "LOINC"),
        ("LOINC", "LOINC"),
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "RXNORM"),
        ("RxNorm", "RXNORM"),
        ("DCM", "DICOM"),
        (" SNOMED-CT ", "SNOMED"),
        ("", None),
        (None, None),
        ("http://example.org", None),
    ],
)
def test_every_spelling_of_a_code_system_has_one_canonical_name(spelling, canonical):
    assert codesystems.canonical_system(spelling) == canonical


def test_codes_compare_without_dots_and_case():
    assert codesystems.normalize_code(" c79.51 ") == "C7951"
    assert codesystems.normalize_code("29463-7") == "29463-7"
    assert codesystems.DEFAULT_SYSTEM["observations"] == "LOINC"
    assert (
        codesystems.DEFAULT_SYSTEM["conditions"]
        == codesystems.DEFAULT_SYSTEM["procedures"]
        == "SNOMED"
    )


def test_an_unreviewed_value_set_is_warned_about_once_within_a_run_and_at_every_load_outside(
    tmp_path, monkeypatch, caplog
):
    for path in [*valuesets.value_set_files(), valuesets.VERSIONS_FILE]:
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(valuesets, "FOLDER", tmp_path)
    monkeypatch.setattr(valuesets, "VERSIONS_FILE", tmp_path / "versions.csv")
    (tmp_path / "example.csv").write_text(
        "concept,code_system,code,match,description\nexample,SNOMED,386661006,exact,Fever\n"
    )
    con = duckdb.connect()

    def warnings() -> int:
        return sum("value set example has no row" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="pipelines.valuesets"):
        with valuesets.one_warning_per_run():
            for _ in range(4):  # the primary build and three sensitivity variants
                load_value_sets(con)
        assert warnings() == 1
        with valuesets.one_warning_per_run():  # the next run says it again
            load_value_sets(con)
        assert warnings() == 2
        load_value_sets(con)  # outside a run (a notebook, a test): every load
        load_value_sets(con)
        assert warnings() == 4
