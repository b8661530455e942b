"""The protocol's red flags (PROTOCOL.md section 5), named once for every module."""

# The seed article's six red flags; red_flag_count counts these.
SEED_FLAGS = (
    "persistent_pain",
    "night_pain",
    "weight_loss",
    "neuro_symptoms",
    "spinal_tenderness",
    "breast_cancer_history",
)
# The seed flags and the three from the literature that go beyond the article.
FLAGS = (*SEED_FLAGS, "age_50_plus", "failed_conservative_therapy", "elevated_alp")
