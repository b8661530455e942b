"""Rows of one chunk of patients, as integer arrays (codes are indexes into the code books).

Background and planted generators append to one `Records`; `finish()` concatenates them.
Child rows (conditions, observations, ...) point at an encounter row and take their
patient and time from it, as Synthea's do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pipelines.generator import catalog
from pipelines.generator.catalog import Code, ImagingKind, Observable

NEVER = 10**7  # a day number far beyond any date: "no date" (empty STOP, alive, no outcome)
DAY_SECONDS = 86_400


def _collect(kind: type) -> list:
    """Every catalog object of one kind, in a fixed order, without duplicates."""
    found: list = []

    def visit(value) -> None:
        if isinstance(value, kind):
            if value not in found:
                found.append(value)
        elif isinstance(value, tuple | list):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, ImagingKind) and kind is Code:
            visit(value.procedure)

    for name in sorted(vars(catalog)):
        if name.isupper():
            visit(getattr(catalog, name))
    return found


CODES: list[Code] = _collect(Code)
OBSERVABLES: list[Observable] = _collect(Observable)
IMAGING_KINDS: list[ImagingKind] = _collect(ImagingKind)
_CODE_INDEX = {c: i for i, c in enumerate(CODES)}
_OBS_INDEX = {o: i for i, o in enumerate(OBSERVABLES)}
_IMAGING_INDEX = {k: i for i, k in enumerate(IMAGING_KINDS)}


def code_id(code: Code) -> int:
    return _CODE_INDEX[code]


def code_ids(codes) -> np.ndarray:
    return np.array([_CODE_INDEX[c] for c in codes], dtype=np.int32)


def observable_id(obs: Observable) -> int:
    return _OBS_INDEX[obs]


def imaging_id(kind: ImagingKind) -> int:
    return _IMAGING_INDEX[kind]


@dataclass
class Tables:
    """A chunk's rows: one dict of equal-length numpy columns per table."""

    encounters: dict[str, np.ndarray]
    conditions: dict[str, np.ndarray]
    observations: dict[str, np.ndarray]
    procedures: dict[str, np.ndarray]
    medications: dict[str, np.ndarray]
    imaging_studies: dict[str, np.ndarray]


class Records:
    """Appends rows table by table; every `add_*` takes arrays or scalars (broadcast)."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
        self.n_encounters = 0

    def _add(self, table: str, **columns) -> None:
        n = max(np.size(v) for v in columns.values())
        for name, value in columns.items():
            self._parts[table][name].append(np.broadcast_to(np.asarray(value), (n,)).copy())

    def add_encounters(self, patient, day, etype, reason=-1) -> np.ndarray:
        """New encounters; returns their row numbers for child rows to point at."""
        patient = np.asarray(patient)
        rows = np.arange(self.n_encounters, self.n_encounters + patient.size, dtype=np.int64)
        self.n_encounters += patient.size
        if patient.size:
            self._add("encounters", patient=patient, day=day, etype=etype, reason=reason)
        return rows

    def add_conditions(self, encounter, code, stop_day) -> None:
        if np.size(encounter):
            self._add("conditions", encounter=encounter, code=code, stop_day=stop_day)

    def add_observations(self, encounter, observable, value, has_encounter=True) -> None:
        if np.size(encounter):
            self._add(
                "observations",
                encounter=encounter,
                observable=observable,
                value=value,
                has_encounter=has_encounter,
            )

    def add_procedures(self, encounter, code, reason=-1) -> None:
        if np.size(encounter):
            self._add("procedures", encounter=encounter, code=code, reason=reason)

    def add_medications(self, encounter, code, stop_day, reason=-1) -> None:
        if np.size(encounter):
            self._add(
                "medications", encounter=encounter, code=code, stop_day=stop_day, reason=reason
            )

    def add_imaging(self, encounter, kind) -> None:
        if np.size(encounter):
            self._add("imaging_studies", encounter=encounter, kind=kind)

    def finish(self) -> Tables:
        empty = {
            "encounters": ("patient", "day", "etype", "reason"),
            "conditions": ("encounter", "code", "stop_day"),
            "observations": ("encounter", "observable", "value", "has_encounter"),
            "procedures": ("encounter", "code", "reason"),
            "medications": ("encounter", "code", "stop_day", "reason"),
            "imaging_studies": ("encounter", "kind"),
        }
        out = {}
        for table, names in empty.items():
            parts = self._parts.get(table, {})
            out[table] = {
                n: np.concatenate(parts[n]) if n in parts else np.zeros(0, np.int64) for n in names
            }
        return Tables(**out)
