"""Where the package finds its data: the SQL models (`sql/`) and the data contracts
(`data_contracts/`). Both stay at the top of the repository (../shared/STYLE.md); the wheel
ships them inside the package, as `pipelines/sql` and `pipelines/data_contracts` (setup.py),
so an installed package never looks for a repository root. The value sets and the report
template live inside the package already (`pipelines/valuesets`, `pipelines/templates`).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`pipelines/<name>` in an installed package, `<name>` at the top of a checkout."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


SQL_DIR = data_dir("sql")
CONTRACTS_DIR = data_dir("data_contracts")
VALUESETS_DIR = PACKAGE_DIR / "valuesets"
