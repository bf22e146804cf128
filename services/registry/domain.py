"""The registry's own rules, as pure functions (no I/O): validity ranges. The coverage rules it
answers `resolve` with (pathways by age, opening hours, postcode to place, network and teams)
live in `contracts.coverage`, because triage applies the same rules to its read-model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# --- validity ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validity:
    """A half-open range of dates [valid_from, valid_to); valid_to None is open-ended."""

    valid_from: date
    valid_to: date | None = None

    def __post_init__(self) -> None:
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")

    def contains(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)

    def overlaps(self, other: Validity) -> bool:
        starts_before_other_ends = other.valid_to is None or self.valid_from < other.valid_to
        ends_after_other_starts = self.valid_to is None or other.valid_from < self.valid_to
        return starts_before_other_ends and ends_after_other_starts
