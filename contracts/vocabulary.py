"""The codes services exchange about a referral: its clinical response priority, its route and its
source. Triage owns the rules that choose them (`services/triage/domain/`); every other service
reads them from events and uses these names for them, so they are defined once, here."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Priority(IntEnum):
    """MHSDS ClinRespPriorityType. The codes are not in urgency order (4 sits between 1 and 2),
    so never compare priorities with < or >: triage's `URGENCY_ORDER` / `more_urgent` rank them."""

    EMERGENCY = 1
    URGENT = 2
    ROUTINE = 3
    VERY_URGENT = 4

    @property
    def label(self) -> str:
        """How the suite names the priority to people ("very urgent")."""
        return PRIORITY_LABELS[self]


PRIORITY_LABELS: dict[int, str] = {
    Priority.EMERGENCY: "emergency",
    Priority.URGENT: "urgent",
    Priority.ROUTINE: "routine",
    Priority.VERY_URGENT: "very urgent",
}


class Source(StrEnum):
    """Who referred: the referral source codes of the single point of access."""

    GP = "gp"
    AE = "ae"  # A&E: psychiatric liaison
    POLICE = "police"
    AMBULANCE = "ambulance"
    SOCIAL_CARE = "social_care"
    VCFSE = "vcfse"
    INPATIENT_DISCHARGE = "inpatient_discharge"
    CARER = "carer"
    SELF = "self"


class Route(StrEnum):
    """Where triage sends a referral: a clinical route, partner services, or back to an episode."""

    CRISIS_RESPONSE = "crisis_response"
    CRISIS_LINE = "crisis_line"
    HOME_TREATMENT = "home_treatment"
    FRONT_DOOR_PRIMARY = "front_door_primary"
    FRONT_DOOR_SECONDARY = "front_door_secondary"
    FOCUSED_SUPPORT = "focused_support"
    STAYING_WELL = "staying_well"
    VCFSE_SIGNPOST = "vcfse_signpost"
    REACCESS = "reaccess"
    OUT_OF_AREA = "out_of_area"


# Routes with a clinical team, where careplan keeps an episode of care (triage routes to them and
# careplan opens one for them): a signpost, the crisis line and out of area have none.
EPISODE_ROUTES: frozenset[Route] = frozenset(
    {
        Route.CRISIS_RESPONSE, Route.HOME_TREATMENT, Route.FRONT_DOOR_PRIMARY, Route.FRONT_DOOR_SECONDARY,
        Route.FOCUSED_SUPPORT, Route.STAYING_WELL, Route.REACCESS,
    }
)  # fmt: skip
