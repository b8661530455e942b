"""Where the package finds its data: the SQL models (`sql/`) and the data contracts
(`data_contracts/`). Both stay at the top of the repository (../shared/STYLE.md); the wheel
ships them inside the package, as `pipelines/sql` and `pipelines/data_contracts` (setup.py),
so an installed package never looks for a repository root. The value sets and the report
template live inside the package already (`pipelines/valuesets`, `pipelines/templates`).
"""

from __future__ import annotations

import hashlib
import subprocess
from contextlib import suppress
from pathlib import Path

from pipelines import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`pipelines/<name>` in an installed package, `<name>` at the top of a checkout."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


SQL_DIR = data_dir("sql")
CONTRACTS_DIR = data_dir("data_contracts")
VALUESETS_DIR = PACKAGE_DIR / "valuesets"


def code_version() -> str:
    """Package version, git commit when available, and a hash of the SQL and value sets."""
    digest = hashlib.sha256()
    # named as in the repository (sql/..., pipelines/valuesets/...) in either layout, so an
    # installed package and its checkout record the same hash
    files = [
        (f"sql/{p.relative_to(SQL_DIR).as_posix()}", p) for p in sorted(SQL_DIR.rglob("*.sql"))
    ]
    files += [(f"pipelines/valuesets/{p.name}", p) for p in sorted(VALUESETS_DIR.glob("*.csv"))]
    for name, path in files:
        digest.update(name.encode())
        digest.update(path.read_bytes())
    commit = ""
    with suppress(OSError):
        commit = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    parts = [f"redflags {__version__}"]
    if commit:
        parts.append(f"git {commit}")
    parts.append(f"sql+valuesets sha256:{digest.hexdigest()[:12]}")
    return "; ".join(parts)
