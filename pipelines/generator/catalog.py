"""Codes the generator writes: Synthea-like background, and the study's planted codes.

Background codes and descriptions are reused from the real exports in
`../shared/synthea` and deliberately avoid every study value set: no back pain, pain,
cancer, metastasis, weight-loss, neurological or night-pain codes, no analgesics or
opioids (not even combination cough syrups with acetaminophen), no spine imaging.
Descriptions never contain commas (Synthea replaces them with spaces, as here).

Planted codes follow PROTOCOL.md sections 3-5 and research/clinical-anchors.md section 3.
`298695003` (tenderness of spine) and the spine body-site / imaging procedure codes
marked below are not verified against a terminology browser (see docs/generator.md).
"""

from __future__ import annotations

from dataclasses import dataclass

SNOMED_URL = "http://snomed.info/sct"
ICD10_URL = "http://hl7.org/fhir/sid/icd-10-cm"


@dataclass(frozen=True)
class Code:
    code: str
    description: str
    system: str = "SNOMED"  # SNOMED | ICD10


def _sn(code: str, description: str) -> Code:
    return Code(code, description)


def _icd(code: str, description: str) -> Code:
    return Code(code, description, "ICD10")


# ---------------------------------------------------------------- encounter types
@dataclass(frozen=True)
class EncounterType:
    key: str
    encounter_class: str
    code: str
    description: str
    base_cost: float


ENCOUNTER_TYPES = (
    EncounterType(
        "wellness", "wellness", "162673000", "General examination of patient (procedure)", 136.80
    ),
    EncounterType("symptom", "ambulatory", "185345009", "Encounter for symptom (procedure)", 85.55),
    EncounterType("problem", "ambulatory", "185347001", "Encounter for problem (procedure)", 85.55),
    EncounterType("dental", "outpatient", "185349003", "Encounter for check up (procedure)", 85.55),
    EncounterType("follow_up", "ambulatory", "390906007", "Follow-up encounter (procedure)", 85.55),
    EncounterType(
        "emergency", "emergency", "50849002", "Emergency room admission (procedure)", 146.18
    ),
    EncounterType(
        "eye", "ambulatory", "36228007", "Ophthalmic examination and evaluation (procedure)", 85.55
    ),
    EncounterType(
        "consultation", "outpatient", "698314001", "Consultation for treatment (procedure)", 85.55
    ),
    EncounterType(
        "outpatient_procedure", "ambulatory", "371883000", "Outpatient procedure (procedure)", 85.55
    ),
)
ENCOUNTER_INDEX = {t.key: i for i, t in enumerate(ENCOUNTER_TYPES)}

# ---------------------------------------------------------------- conditions
SOCIAL_FINDINGS = (
    _sn("160903007", "Full-time employment (finding)"),
    _sn("160904001", "Part-time employment (finding)"),
    _sn("73438004", "Unemployed (finding)"),
    _sn("741062008", "Not in labor force (finding)"),
    _sn("73595000", "Stress (finding)"),
    _sn("314529007", "Medication review due (situation)"),
    _sn("423315002", "Limited social contact (finding)"),
    _sn("422650009", "Social isolation (finding)"),
    _sn("224299000", "Received higher education (finding)"),
    _sn("706893006", "Victim of intimate partner abuse (finding)"),
    _sn("10939881000119105", "Unhealthy alcohol drinking behavior (finding)"),
    _sn("105531004", "Housing unsatisfactory (finding)"),
    _sn("713458007", "Lack of access to transportation (finding)"),
)
SOCIAL_WEIGHTS = (30, 8, 6, 6, 14, 12, 6, 5, 4, 3, 3, 2, 1)
CHRONIC_CONDITIONS = (  # with the share of patients who have each
    (_sn("59621000", "Essential hypertension (disorder)"), 0.25),
    (_sn("55822004", "Hyperlipidemia (disorder)"), 0.15),
    (_sn("195967001", "Asthma (disorder)"), 0.08),
    (_sn("44054006", "Diabetes mellitus type 2 (disorder)"), 0.08),
    (_sn("162864005", "Body mass index 30+ - obesity (finding)"), 0.12),
    (_sn("271737000", "Anemia (disorder)"), 0.05),
)
ACUTE_CONDITIONS = (
    _sn("444814009", "Viral sinusitis (disorder)"),
    _sn("195662009", "Acute viral pharyngitis (disorder)"),
    _sn("10509002", "Acute bronchitis (disorder)"),
    _sn("43878008", "Streptococcal sore throat (disorder)"),
    _sn("65363002", "Otitis media (disorder)"),
    _sn("44465007", "Sprain of ankle (disorder)"),
    _sn("75498004", "Acute bacterial sinusitis (disorder)"),
    _sn("49727002", "Cough (finding)"),
    _sn("386661006", "Fever (finding)"),
)
ACUTE_WEIGHTS = (30, 15, 12, 8, 6, 5, 5, 10, 9)
DENTAL_CONDITIONS = (
    _sn("66383009", "Gingivitis (disorder)"),
    _sn("109570002", "Primary dental caries (disorder)"),
    _sn("18718003", "Gingival disease (disorder)"),
)

# ---------------------------------------------------------------- medications (RxNorm)
CHRONIC_MEDICATIONS = {  # by chronic condition code
    "59621000": (
        _sn("314076", "lisinopril 10 MG Oral Tablet"),
        _sn("310798", "Hydrochlorothiazide 25 MG Oral Tablet"),
    ),
    "55822004": (_sn("314231", "Simvastatin 10 MG Oral Tablet"),),
    "195967001": (
        _sn("2123111", "NDA020503 200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
        _sn("895994", "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler"),
    ),
    "44054006": (
        _sn("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ),
    "162864005": (),
    "271737000": (),
}
CONTRACEPTIVE = _sn("757594", "Jolivette 28 Day Pack")
ANTIBIOTICS = (  # for the bacterial / sinus acute conditions
    _sn("562251", "Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet"),
    _sn("834061", "Penicillin V Potassium 250 MG Oral Tablet"),
    _sn("308192", "Amoxicillin 500 MG Oral Tablet"),
)
FLUORIDE = _sn("1535362", "sodium fluoride 0.0272 MG/MG Oral Gel")
TROPICAMIDE = _sn("313521", "tropicamide 5 MG/ML Ophthalmic Solution")
LORATADINE = _sn("665078", "Loratadine 5 MG Chewable Tablet")

# ---------------------------------------------------------------- procedures
WELLNESS_PROCEDURES = (  # with the probability per wellness visit
    (_sn("171207006", "Depression screening (procedure)"), 0.60),
    (_sn("710824005", "Assessment of health and social care needs (procedure)"), 0.50),
    (_sn("428211000124100", "Assessment of substance use (procedure)"), 0.35),
    (_sn("710841007", "Assessment of anxiety (procedure)"), 0.30),
    (
        _sn(
            "454711000124102",
            "Depression screening using Patient Health Questionnaire Two-Item score (procedure)",
        ),
        0.25,
    ),
    (
        _sn(
            "763302001",
            "Assessment using Alcohol Use Disorders Identification Test - Consumption (procedure)",
        ),
        0.20,
    ),
    (_sn("866148006", "Screening for domestic abuse (procedure)"), 0.15),
    (_sn("713106006", "Screening for drug abuse (procedure)"), 0.15),
    (_sn("430193006", "Medication reconciliation (procedure)"), 0.30),
)
DENTAL_PROCEDURES = (
    (_sn("34043003", "Dental consultation and report (procedure)"), 1.00),
    (_sn("274788003", "Examination of gingivae (procedure)"), 0.70),
    (_sn("243085009", "Oral health education (procedure)"), 0.70),
    (_sn("225362009", "Dental care (regime/therapy)"), 0.60),
    (
        _sn(
            "1260009003",
            "Removal of supragingival plaque and calculus from all teeth using dental instrument (procedure)",
        ),
        0.55,
    ),
    (
        _sn(
            "1260010008",
            "Removal of subgingival plaque and calculus from all teeth using dental instrument (procedure)",
        ),
        0.50,
    ),
    (_sn("68071007", "Dental fluoride treatment (procedure)"), 0.30),
)
DENTAL_XRAY = _sn("241046008", "Dental plain X-ray bitewing (procedure)")
CHEST_XRAY = _sn("399208008", "Plain X-ray of chest (procedure)")
FUNDOSCOPY = _sn("314971001", "Camera fundoscopy (procedure)")
OTHER_PROCEDURES = (
    _sn("5880005", "Physical examination procedure (procedure)"),
    _sn("67879005", "History and physical examination  limited (procedure)"),
    _sn("76601001", "Intramuscular injection (procedure)"),
)


# ---------------------------------------------------------------- observations
@dataclass(frozen=True)
class Observable:
    """An observation code with how its VALUE is drawn: numeric (mean, sd, low, high) or text choices."""

    code: str
    description: str
    category: str
    units: str
    mean: float = 0.0
    sd: float = 0.0
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()
    integer: bool = False

    @property
    def is_text(self) -> bool:
        return bool(self.choices)


def _num(code, description, category, units, mean, sd, low, high, integer=False) -> Observable:
    return Observable(code, description, category, units, mean, sd, low, high, integer=integer)


def _txt(code, description, category, *choices) -> Observable:
    return Observable(code, description, category, "", choices=choices)


HEIGHT = _num("8302-2", "Body Height", "vital-signs", "cm", 168.0, 9.0, 145.0, 200.0)
WEIGHT = _num("29463-7", "Body Weight", "vital-signs", "kg", 78.0, 14.0, 45.0, 140.0)
BMI = _num(
    "39156-5", "Body mass index (BMI) [Ratio]", "vital-signs", "kg/m2", 27.0, 4.0, 16.0, 45.0
)
ALP = _num(
    "6768-6",
    "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
    "laboratory",
    "U/L",
    75.0,
    18.0,
    40.0,
    120.0,  # always well inside normal; study signal only where planted
)
VITALS = (
    _num("8480-6", "Systolic Blood Pressure", "vital-signs", "mm[Hg]", 121.0, 12.0, 95.0, 165.0),
    _num("8462-4", "Diastolic Blood Pressure", "vital-signs", "mm[Hg]", 78.0, 8.0, 55.0, 105.0),
    _num("8867-4", "Heart rate", "vital-signs", "/min", 74.0, 9.0, 52.0, 110.0),
    _num("9279-1", "Respiratory rate", "vital-signs", "/min", 14.0, 1.5, 12.0, 20.0),
    _num(
        "72514-3",
        "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
        "vital-signs",
        "{score}",
        1.0,
        1.0,
        0.0,
        3.0,
        integer=True,
    ),
)
QUALITY_OF_LIFE = (  # Synthea writes these without an encounter or category
    _num("QOLS", "QOLS", "", "{score}", 0.9, 0.05, 0.6, 1.0),
    _num("QALY", "QALY", "", "a", 30.0, 12.0, 1.0, 70.0, integer=True),
    _num("DALY", "DALY", "", "a", 0.5, 0.5, 0.0, 4.0),
)
TOBACCO = _txt(
    "72166-2",
    "Tobacco smoking status",
    "social-history",
    "Never smoked tobacco (finding)",
    "Never smoked tobacco (finding)",
    "Never smoked tobacco (finding)",
    "Ex-smoker (finding)",
    "Smokes tobacco daily (finding)",
)
SCORES = (  # with the probability per wellness visit
    (
        _num(
            "55758-7",
            "Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]",
            "survey",
            "{score}",
            1.0,
            1.0,
            0.0,
            4.0,
            integer=True,
        ),
        0.5,
    ),
    (
        _num(
            "75626-2",
            "Total score [AUDIT-C]",
            "survey",
            "{score}",
            2.0,
            1.5,
            0.0,
            8.0,
            integer=True,
        ),
        0.3,
    ),
    (
        _num(
            "70274-6",
            "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]",
            "survey",
            "{score}",
            3.0,
            2.5,
            0.0,
            15.0,
            integer=True,
        ),
        0.2,
    ),
)
PRAPARE = (  # social-needs survey items, all asked together
    _txt(
        "93038-8", "Stress level", "survey", "Not at all", "A little bit", "Somewhat", "Quite a bit"
    ),
    _txt(
        "93034-7",
        "Have you been discharged from the armed forces of the United States?",
        "survey",
        "No",
        "No",
        "Yes",
    ),
    _txt("93033-9", "Are you worried about losing your housing?", "survey", "No", "No", "Yes"),
    _txt("93027-1", "Are you a refugee?", "survey", "No", "No", "No", "Yes"),
    _txt(
        "93026-3",
        "Do you feel physically and emotionally safe where you currently live?",
        "survey",
        "Yes",
        "Yes",
        "No",
    ),
    _txt(
        "93028-9",
        "In the past year  have you spent more than 2 nights in a row in a jail  prison  detention center  or juvenile correctional facility?",
        "survey",
        "No",
        "No",
        "Yes",
    ),
    _txt(
        "93035-4",
        "At any point in the past 2 years  has season or migrant farm work been your or your family's main source of income?",
        "survey",
        "No",
        "No",
        "No",
        "Yes",
    ),
    _txt(
        "76501-6",
        "Within the last year  have you been afraid of your partner or ex-partner?",
        "survey",
        "No",
        "No",
        "Yes",
    ),
    _txt(
        "71802-3",
        "Housing status",
        "survey",
        "I have housing",
        "I have housing",
        "I do not have housing",
    ),
    _txt("54899-0", "Preferred language", "survey", "English", "English", "English", "Spanish"),
    _txt(
        "67875-5",
        "Employment status - current",
        "survey",
        "Full-time work",
        "Part-time or temporary work",
        "Unemployed",
    ),
    _txt(
        "82589-3",
        "Highest level of education",
        "survey",
        "High school diploma or GED",
        "More than high school",
        "Less than high school",
    ),
    _num(
        "63512-8",
        "How many people are living or staying at this address?",
        "survey",
        "{#}",
        3.0,
        1.5,
        1.0,
        8.0,
        integer=True,
    ),
)
METABOLIC_PANEL = (
    _num(
        "2339-0", "Glucose [Mass/volume] in Blood", "laboratory", "mg/dL", 88.0, 10.0, 65.0, 140.0
    ),
    _num(
        "6299-2",
        "Urea nitrogen [Mass/volume] in Blood",
        "laboratory",
        "mg/dL",
        13.0,
        3.0,
        7.0,
        20.0,
    ),
    _num("38483-4", "Creatinine [Mass/volume] in Blood", "laboratory", "mg/dL", 1.0, 0.2, 0.6, 1.5),
    _num("49765-1", "Calcium [Mass/volume] in Blood", "laboratory", "mg/dL", 9.4, 0.4, 8.5, 10.2),
    _num(
        "2947-0", "Sodium [Moles/volume] in Blood", "laboratory", "mmol/L", 140.0, 2.0, 136.0, 144.0
    ),
    _num("6298-4", "Potassium [Moles/volume] in Blood", "laboratory", "mmol/L", 4.4, 0.3, 3.7, 5.2),
    _num(
        "2069-3",
        "Chloride [Moles/volume] in Blood",
        "laboratory",
        "mmol/L",
        106.0,
        2.0,
        101.0,
        111.0,
    ),
    _num(
        "20565-8",
        "Carbon dioxide  total [Moles/volume] in Blood",
        "laboratory",
        "mmol/L",
        24.5,
        2.0,
        20.0,
        29.0,
    ),
)
LIPID_PANEL = (
    _num(
        "2093-3",
        "Cholesterol [Mass/volume] in Serum or Plasma",
        "laboratory",
        "mg/dL",
        185.0,
        25.0,
        120.0,
        280.0,
    ),
    _num("2571-8", "Triglycerides", "laboratory", "mg/dL", 130.0, 30.0, 60.0, 300.0),
    _num(
        "18262-6",
        "Low Density Lipoprotein Cholesterol",
        "laboratory",
        "mg/dL",
        110.0,
        25.0,
        40.0,
        200.0,
    ),
    _num(
        "2085-9",
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
        "laboratory",
        "mg/dL",
        55.0,
        10.0,
        30.0,
        90.0,
    ),
)
CBC_PANEL = (
    _num(
        "6690-2",
        "Leukocytes [#/volume] in Blood by Automated count",
        "laboratory",
        "10*3/uL",
        7.0,
        1.5,
        4.0,
        11.0,
    ),
    _num(
        "789-8",
        "Erythrocytes [#/volume] in Blood by Automated count",
        "laboratory",
        "10*6/uL",
        4.7,
        0.4,
        3.9,
        5.7,
    ),
    _num("718-7", "Hemoglobin [Mass/volume] in Blood", "laboratory", "g/dL", 14.0, 1.2, 11.5, 17.5),
    _num(
        "4544-3",
        "Hematocrit [Volume Fraction] of Blood by Automated count",
        "laboratory",
        "%",
        42.0,
        3.5,
        35.0,
        50.0,
    ),
    _num(
        "787-2",
        "MCV [Entitic volume] by Automated count",
        "laboratory",
        "fL",
        89.0,
        4.0,
        80.0,
        98.0,
    ),
    _num(
        "785-6", "MCH [Entitic mass] by Automated count", "laboratory", "pg", 29.5, 1.5, 27.0, 33.0
    ),
    _num(
        "786-4",
        "MCHC [Mass/volume] by Automated count",
        "laboratory",
        "g/dL",
        34.0,
        1.0,
        32.0,
        36.0,
    ),
    _num(
        "21000-5",
        "Erythrocyte distribution width [Entitic volume] by Automated count",
        "laboratory",
        "fL",
        42.0,
        3.0,
        37.0,
        50.0,
    ),
    _num(
        "777-3",
        "Platelets [#/volume] in Blood by Automated count",
        "laboratory",
        "10*3/uL",
        260.0,
        50.0,
        150.0,
        400.0,
    ),
    _num(
        "32207-3",
        "Platelet distribution width [Entitic volume] in Blood by Automated count",
        "laboratory",
        "fL",
        12.0,
        2.0,
        9.0,
        17.0,
    ),
    _num(
        "32623-1",
        "Platelet mean volume [Entitic volume] in Blood by Automated count",
        "laboratory",
        "fL",
        10.0,
        1.0,
        7.5,
        12.5,
    ),
)
HEPATIC_PANEL = (  # with ALP: comprehensive metabolic panel extras
    ALP,
    _num(
        "2885-2",
        "Protein [Mass/volume] in Serum or Plasma",
        "laboratory",
        "g/dL",
        7.0,
        0.4,
        6.0,
        8.3,
    ),
    _num(
        "1975-2",
        "Bilirubin.total [Mass/volume] in Serum or Plasma",
        "laboratory",
        "mg/dL",
        0.7,
        0.2,
        0.2,
        1.2,
    ),
    _num(
        "1920-8",
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "laboratory",
        "U/L",
        24.0,
        6.0,
        10.0,
        40.0,
    ),
    _num(
        "1751-7",
        "Albumin [Mass/volume] in Serum or Plasma",
        "laboratory",
        "g/dL",
        4.4,
        0.3,
        3.5,
        5.3,
    ),
    _num(
        "1742-6",
        "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "laboratory",
        "U/L",
        25.0,
        7.0,
        8.0,
        45.0,
    ),
    _num(
        "10834-0",
        "Globulin [Mass/volume] in Serum by calculation",
        "laboratory",
        "g/L",
        2.8,
        0.3,
        2.0,
        3.5,
    ),
)
HBA1C = _num(
    "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "laboratory", "%", 5.6, 0.4, 4.5, 7.5
)
FOLLOW_UP_VITALS = VITALS[:3]  # blood pressure and heart rate at problem / follow-up visits


# ---------------------------------------------------------------- imaging (background)
@dataclass(frozen=True)
class ImagingKind:
    body_site_code: str
    body_site_description: str
    modality_code: str
    modality_description: str
    sop_code: str
    sop_description: str
    procedure: Code


DENTAL_IMAGING = ImagingKind(
    "700016008",
    "Structure of region of internal part of mouth (body structure)",
    "DX",
    "Digital Radiography",
    "1.2.840.10008.5.1.4.1.1.1.3",
    "Digital Intra-Oral X-Ray Image Storage - For Presentation",
    DENTAL_XRAY,
)
CHEST_IMAGING = ImagingKind(
    "51185008",
    "Chest",
    "DX",
    "Digital Radiography",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "Digital X-Ray Image Storage - For Presentation",
    CHEST_XRAY,
)
EYE_IMAGING = ImagingKind(
    "181171005",
    "Entire retina (body structure)",
    "OP",
    "Ophthalmic Photography",
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",
    "Ophthalmic Photography 8 Bit Image Storage",
    FUNDOSCOPY,
)

# ================================================================ planted study codes
BACK_PAIN_CONDITIONS = (  # index / repeat records (PROTOCOL.md section 3)
    _sn("278860009", "Chronic low back pain (finding)"),
    _sn("279039007", "Low back pain (finding)"),
    _sn("161891005", "Backache (finding)"),
)
BACK_PAIN_ICD10 = _icd("M54.50", "Low back pain  unspecified")
BONE_METASTASIS = (
    _sn("94222008", "Secondary malignant neoplasm of bone (disorder)"),
    _sn("94602001", "Secondary malignant neoplasm of vertebral column (disorder)"),
)
BONE_METASTASIS_ICD10 = _icd("C79.51", "Secondary malignant neoplasm of bone")
NIGHT_PAIN = _sn("36163009", "Night pain (finding)")
WEIGHT_LOSS = _sn("448765001", "Unintentional weight loss (finding)")
WEIGHT_LOSS_ICD10 = _icd("R63.4", "Abnormal weight loss")
NEURO_SYMPTOMS = (
    _sn("44077006", "Numbness (finding)"),
    _sn("26544005", "Muscle weakness (finding)"),
    _sn("282145008", "Unable to walk (finding)"),
)
NEURO_SYMPTOMS_ICD10 = (
    _icd("R20.0", "Anesthesia of skin"),
    _icd("R20.2", "Paresthesia of skin"),
    _icd("M62.81", "Muscle weakness (generalized)"),
    _icd("R26.2", "Difficulty in walking  not elsewhere classified"),
)
SPINAL_TENDERNESS = _sn("298695003", "Tenderness of spine (finding)")  # unverified code
BREAST_CANCER = _sn("254837009", "Malignant neoplasm of breast (disorder)")
BREAST_CANCER_ICD10 = (
    _icd("C50.919", "Malignant neoplasm of unspecified site of unspecified female breast"),
    _icd("Z85.3", "Personal history of malignant neoplasm of breast"),
)
FAMILY_HISTORY_BREAST_CANCER = _sn(
    "429740004", "Family history of malignant neoplasm of breast (situation)"
)
FAMILY_HISTORY_ICD10 = _icd("Z80.3", "Family history of malignant neoplasm of breast")
NON_OPIOID_ANALGESICS = (
    _sn("313782", "Acetaminophen 325 MG Oral Tablet"),
    _sn("198405", "Ibuprofen 400 MG Oral Tablet"),
    _sn("310965", "Ibuprofen 200 MG Oral Tablet"),
)
OPIOIDS = (
    _sn("856987", "Acetaminophen 300 MG / Hydrocodone Bitartrate 5 MG Oral Tablet"),
    _sn("1049625", "Acetaminophen 325 MG / Oxycodone Hydrochloride 10 MG Oral Tablet [Percocet]"),
)
# After diagnosis (care_after_diagnosis.csv, skeletal_related_events.csv); medications are
# RxNorm and procedures SNOMED, as in the real Synthea breast-cancer export
CARE_CODES = {
    "chemotherapy": ("medications", _sn("583214", "Paclitaxel 100 MG Injection")),
    "endocrine_therapy": ("medications", _sn("198240", "Tamoxifen 10 MG Oral Tablet")),
    "radiotherapy": (
        "procedures",
        _sn("33195004", "External beam radiation therapy procedure (procedure)"),
    ),
    "bone_targeted_agent": (
        "medications",
        _sn("1114085", "100 ML zoledronic acid 0.04 MG/ML Injection"),
    ),
    "corticosteroid": ("medications", _sn("197582", "dexamethasone 4 MG Oral Tablet")),
}
SPINAL_CORD_COMPRESSION = _sn("71286001", "Compression of spinal cord (disorder)")
LUMBAR_SPINE = ("122496007", "Lumbar spine structure (body structure)")  # unverified body-site code
SPINE_IMAGING = {  # modality -> imaging study and procedure (clinical-anchors.md section 3)
    "xray": ImagingKind(
        *LUMBAR_SPINE,
        "DX",
        "Digital Radiography",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "Digital X-Ray Image Storage - For Presentation",
        _sn("840361000", "Plain X-ray of lumbar spine (procedure)"),
    ),
    "ct": ImagingKind(
        *LUMBAR_SPINE,
        "CT",
        "Computed Tomography",
        "1.2.840.10008.5.1.4.1.1.2",
        "CT Image Storage",
        _sn("572091000119106", "CT of lumbar spine without contrast (procedure)"),
    ),
    "mri": ImagingKind(
        *LUMBAR_SPINE,
        "MR",
        "Magnetic Resonance",
        "1.2.840.10008.5.1.4.1.1.4",
        "MR Image Storage",
        _sn("394451000119106", "MRI of lumbar spine without contrast (procedure)"),
    ),
    "bone_scan": ImagingKind(
        *LUMBAR_SPINE,
        "NM",
        "Nuclear Medicine",
        "1.2.840.10008.5.1.4.1.1.20",
        "Nuclear Medicine Image Storage",
        _sn("41747008", "Radionuclide bone scan (procedure)"),
    ),
}
IMAGING_MODALITIES = tuple(SPINE_IMAGING)

STUDY_CONDITION_CODES = frozenset(
    c.code
    for c in (
        *BACK_PAIN_CONDITIONS,
        BACK_PAIN_ICD10,
        *BONE_METASTASIS,
        BONE_METASTASIS_ICD10,
        NIGHT_PAIN,
        WEIGHT_LOSS,
        WEIGHT_LOSS_ICD10,
        *NEURO_SYMPTOMS,
        *NEURO_SYMPTOMS_ICD10,
        SPINAL_TENDERNESS,
        BREAST_CANCER,
        *BREAST_CANCER_ICD10,
        FAMILY_HISTORY_BREAST_CANCER,
        FAMILY_HISTORY_ICD10,
    )
)
BACK_PAIN_CODES = frozenset(c.code for c in (*BACK_PAIN_CONDITIONS, BACK_PAIN_ICD10))
BONE_METASTASIS_CODES = frozenset(c.code for c in (*BONE_METASTASIS, BONE_METASTASIS_ICD10))
ANALGESIC_CODES = frozenset(c.code for c in (*NON_OPIOID_ANALGESICS, *OPIOIDS))
