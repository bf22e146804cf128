"""UK postcodes (BS 7666): normalising a full postcode and its outward code (the district),
which is how the registry's coverage, triage's routing and the directory's proximity find a place."""

from __future__ import annotations

import re

# The outward code (district) and inward code of a UK postcode (BS 7666), plus GIR 0AA.
_OUTWARD = r"[A-Z]{1,2}[0-9][A-Z0-9]?"
_DISTRICT = re.compile(rf"^{_OUTWARD}$")
_POSTCODE = re.compile(rf"^({_OUTWARD}) ?([0-9][A-Z]{{2}})$")


class InvalidPostcode(ValueError):
    pass


def normalise_postcode(raw: str) -> tuple[str, str]:
    """`(formatted, district)` for a UK postcode in any spacing or case: ' bb11aa' → ('BB1 1AA', 'BB1')."""
    compact = re.sub(r"\s+", "", raw or "").upper()
    if compact == "GIR0AA":
        return "GIR 0AA", "GIR"
    if len(compact) < 5 or len(compact) > 7:
        raise InvalidPostcode("a UK postcode has 5 to 7 letters and digits")
    match = _POSTCODE.match(f"{compact[:-3]} {compact[-3:]}")
    if not match:
        raise InvalidPostcode("not a UK postcode")
    return f"{match.group(1)} {match.group(2)}", match.group(1)


def normalise_district(raw: str) -> str:
    district = re.sub(r"\s+", "", raw or "").upper()
    if not _DISTRICT.match(district):
        raise ValueError(f"{raw!r} is not a postcode district")
    return district
