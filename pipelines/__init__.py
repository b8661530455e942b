"""redflags: back-pain red flags and time to diagnosis of bone metastasis, on Synthea-layout exports."""

__version__ = "0.1.0"
