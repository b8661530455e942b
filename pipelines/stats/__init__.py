"""Statistics for the study (PROTOCOL.md section 6) and disclosure control (section 7).

Plain, typed functions on pandas/numpy; `pipelines/analysis.py` wires them to the warehouse.
Methods and references: docs/statistics.md.
"""
