"""What the reporting operations answer, as they answer it: figures are whole counts or
percentages (or null where suppressed), keyed by the measure's own names, so each row's fields
are the `group_by` fields given, then the measure's figures, then `suppressed`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Day = Annotated[str, Field(json_schema_extra={"format": "date"})]
Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeriodOut(_Out):
    start: Day = Field(description="First day reported (inclusive)")
    end_exclusive: Day = Field(description="The day after the last day reported")


class DisclosureOut(_Out):
    applied: bool = Field(description="False only for unsuppressed figures (reporting:unsuppressed)")
    method: str | None = Field(description="The small-number rule applied (null when not applied)")
    any_suppressed: bool


class AggregateOut(_Out):
    """One aggregate pull (JSON; `Accept: text/csv` gives the rows and an "ICB total" row as CSV)."""

    measure: str
    period: PeriodOut
    group_by: list[str]
    disclosure: DisclosureOut
    rows: list[dict[str, Any]] = Field(
        description="One per group: the group_by fields, the measure's figures, and suppressed"
    )
    total: dict[str, Any] = Field(description="The ICB total: the measure's figures, and suppressed")


class ExportFileOut(_Out):
    type: str
    url: str
    count: int


class ExportManifestOut(_Out):
    """A finished export (FHIR Bulk Data manifest)."""

    transactionTime: Instant = Field(description="To the second, rounded down")
    request: str
    requiresAccessToken: Literal[True]
    output: list[ExportFileOut]
    error: list[dict[str, Any]]
