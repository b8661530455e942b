"""The package's layout for setuptools (everything else is in pyproject.toml).

sql/ and data_contracts/ stay at the top of the repository (../shared/STYLE.md); the wheel
ships them inside the package, as pipelines/sql and pipelines/data_contracts, where
pipelines/resources.py finds them (in a checkout it finds them at the top).
"""

from setuptools import find_packages, setup

DATA_PACKAGES = {"pipelines.sql": "sql", "pipelines.data_contracts": "data_contracts"}

setup(
    packages=[*find_packages(include=["pipelines*"]), *DATA_PACKAGES],
    package_dir=DATA_PACKAGES,
)
