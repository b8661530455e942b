"""The dashboard's entry: `streamlit run pipelines/dashboard/app.py` (`redflags dashboard`).

Each page is its own file in views/; the URL of a page is its file name
(`/time_to_diagnosis`). The data source comes from the environment (data.py).
"""

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = (
    ("overview", "Overview"),
    ("time_to_diagnosis", "Time to diagnosis"),
    ("accuracy", "Accuracy"),
    ("model", "ROC, calibration, decision curve"),
    ("sensitivity", "Sensitivity analyses"),
    ("data_quality", "Data quality"),
    ("run_history", "Run history"),
)

st.set_page_config(page_title="redflags results", layout="wide")
pages = [
    st.Page(VIEWS / f"{name}.py", title=title, url_path=name, default=(i == 0))
    for i, (name, title) in enumerate(PAGES)
]
st.navigation(pages).run()
