"""Clinical dates are Europe/London calendar dates (four-week clocks, validity, opening hours)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


def london_date(at: datetime) -> date:
    if at.tzinfo is None:
        raise ValueError("a moment needs a time zone")
    return at.astimezone(LONDON).date()


def london_today() -> date:
    return london_date(datetime.now(UTC))
