"""The results dashboard (`redflags dashboard`): a Streamlit app over the release tables only.

`app.py` is the entry Streamlit runs; `data.py` is the one place that reads data (the
warehouse's `release` schema, read-only, or a Parquet folder from `redflags export`);
`display.py` turns released values and their statuses into text; one module per page in
`pages/`. See docs/dashboard.md.
"""
