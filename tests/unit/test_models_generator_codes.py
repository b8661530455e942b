"""The generator plants exactly the codes our value sets know, and its background none of them.

If these disagree, the generator's planted truth and the SQL models measure different things.
"""

from __future__ import annotations

import pytest

from pipelines import codesystems
from pipelines.valuesets import read_value_sets

catalog = pytest.importorskip("pipelines.generator.catalog")


def concepts_of(code: str, system: str) -> set[str]:
    """Concepts whose value set matches this code (exact or prefix), as the SQL does."""
    code = codesystems.normalize_code(code)
    return {
        r.concept
        for r in read_value_sets()
        if r.code_system == system
        and (r.code == code or (r.match == "prefix" and code.startswith(r.code)))
    }


def system_of(c) -> str:
    return codesystems.ICD10CM if c.system == "ICD10" else codesystems.SNOMED


PLANTED = {
    "back_pain": [*catalog.BACK_PAIN_CONDITIONS, catalog.BACK_PAIN_ICD10],
    "bone_metastasis": [*catalog.BONE_METASTASIS, catalog.BONE_METASTASIS_ICD10],
    "night_pain": [catalog.NIGHT_PAIN],
    "weight_loss_coded": [catalog.WEIGHT_LOSS, catalog.WEIGHT_LOSS_ICD10],
    "neuro_symptoms": [*catalog.NEURO_SYMPTOMS, *catalog.NEURO_SYMPTOMS_ICD10],
    "spinal_tenderness": [catalog.SPINAL_TENDERNESS],
    "breast_cancer": [catalog.BREAST_CANCER, *catalog.BREAST_CANCER_ICD10],
}


@pytest.mark.parametrize("concept", sorted(PLANTED))
def test_every_planted_diagnosis_code_is_in_its_value_set(concept):
    for c in PLANTED[concept]:
        assert concepts_of(c.code, system_of(c)) == {concept}, c


def test_planted_family_history_codes_are_in_no_value_set():
    for c in (catalog.FAMILY_HISTORY_BREAST_CANCER, catalog.FAMILY_HISTORY_ICD10):
        assert concepts_of(c.code, system_of(c)) == set(), c


def test_planted_analgesics_measurements_and_imaging_are_in_their_value_sets():
    for c in catalog.NON_OPIOID_ANALGESICS:
        assert concepts_of(c.code, codesystems.RXNORM) == {"non_opioid_analgesic"}, c
    for c in catalog.OPIOIDS:
        assert concepts_of(c.code, codesystems.RXNORM) == {"opioid"}, c
    assert concepts_of(catalog.WEIGHT.code, codesystems.LOINC) == {"body_weight"}
    assert concepts_of(catalog.ALP.code, codesystems.LOINC) == {"alkaline_phosphatase"}
    for modality, kind in catalog.SPINE_IMAGING.items():
        assert concepts_of(kind.procedure.code, codesystems.SNOMED) == {f"spine_imaging_{modality}"}
        assert concepts_of(kind.modality_code, codesystems.DICOM) == {f"spine_imaging_{modality}"}
        assert concepts_of(kind.body_site_code, codesystems.SNOMED) == {"spine_body_site"}


def test_no_background_code_is_in_a_study_value_set():
    background = [
        *catalog.SOCIAL_FINDINGS,
        *(c for c, _ in catalog.CHRONIC_CONDITIONS),
        *catalog.ACUTE_CONDITIONS,
        *catalog.DENTAL_CONDITIONS,
        *(c for c, _ in catalog.WELLNESS_PROCEDURES),
        *(c for c, _ in catalog.DENTAL_PROCEDURES),
        catalog.DENTAL_XRAY,
        catalog.CHEST_XRAY,
        catalog.FUNDOSCOPY,
        *catalog.OTHER_PROCEDURES,
    ]
    for c in background:
        assert concepts_of(c.code, codesystems.SNOMED) == set(), c
    medications = [m for ms in catalog.CHRONIC_MEDICATIONS.values() for m in ms]
    medications += [
        *catalog.ANTIBIOTICS,
        catalog.CONTRACEPTIVE,
        catalog.FLUORIDE,
        catalog.TROPICAMIDE,
        catalog.LORATADINE,
    ]
    for c in medications:
        assert concepts_of(c.code, codesystems.RXNORM) == set(), c
    for kind in (catalog.DENTAL_IMAGING, catalog.CHEST_IMAGING, catalog.EYE_IMAGING):
        assert concepts_of(kind.body_site_code, codesystems.SNOMED) == set(), kind
