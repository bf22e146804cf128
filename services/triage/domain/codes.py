"""Triage's codes: the urgency order, risks, requested urgencies and needs, and the `Rule` a
clinician reads (Priority, Source and Route are the suite's vocabulary, `contracts.vocabulary`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from contracts.vocabulary import Priority

# --- enums -------------------------------------------------------------------------------------
# Priority, Source and Route are the suite's shared vocabulary (contracts/vocabulary.py).


URGENCY_ORDER: tuple[Priority, ...] = (
    Priority.EMERGENCY,
    Priority.VERY_URGENT,
    Priority.URGENT,
    Priority.ROUTINE,
)
_RANK = {priority: rank for rank, priority in enumerate(URGENCY_ORDER)}


def more_urgent(a: Priority, b: Priority) -> Priority:
    """The more urgent of two priorities (by clinical urgency, not by MHSDS code)."""
    return a if _RANK[Priority(a)] <= _RANK[Priority(b)] else b


class Risk(StrEnum):
    SUICIDAL_IDEATION = "suicidal_ideation"
    SUICIDAL_INTENT = "suicidal_intent"
    SUICIDAL_PLAN = "suicidal_plan"
    RECENT_SELF_HARM = "recent_self_harm"
    HARM_TO_OTHERS = "harm_to_others"
    SAFEGUARDING = "safeguarding"
    PSYCHOSIS = "psychosis"
    SUBSTANCE_USE = "substance_use"


# Indicators that someone may come to harm within hours: never routine, never merely urgent.
IMMINENT_RISKS: frozenset[Risk] = frozenset(
    {Risk.SUICIDAL_INTENT, Risk.SUICIDAL_PLAN, Risk.RECENT_SELF_HARM, Risk.HARM_TO_OTHERS, Risk.PSYCHOSIS}
)


class RequestedUrgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    VERY_URGENT = "very_urgent"
    EMERGENCY = "emergency"


REQUESTED_PRIORITY: dict[RequestedUrgency, Priority] = {
    RequestedUrgency.ROUTINE: Priority.ROUTINE,
    RequestedUrgency.URGENT: Priority.URGENT,
    RequestedUrgency.VERY_URGENT: Priority.VERY_URGENT,
    RequestedUrgency.EMERGENCY: Priority.EMERGENCY,
}


class Need(StrEnum):
    """Presenting needs. Clinical needs are triage's own snake_case codes; the VCFSE support needs
    are exactly the codes of the directory's needs taxonomy
    (services/directory/reference/needs-taxonomy.json, hyphens kept), so a need can be matched
    against partner services without translation."""

    # clinical
    LOW_MOOD = "low_mood"
    ANXIETY = "anxiety"
    TRAUMA = "trauma"
    OCD = "ocd"
    SELF_HARM = "self_harm"
    PSYCHOSIS = "psychosis"
    BIPOLAR = "bipolar"
    EATING_DIFFICULTIES = "eating_difficulties"
    PERSONALITY_DIFFICULTIES = "personality_difficulties"
    MEMORY_CONCERNS = "memory_concerns"
    NEURODEVELOPMENTAL = "neurodevelopmental"
    SUBSTANCE_USE = "substance_use"
    # VCFSE support (directory needs taxonomy codes)
    HOUSING = "housing"
    HOMELESSNESS = "homelessness"
    TENANCY_SUPPORT = "tenancy-support"
    BENEFITS_DEBT = "benefits-debt"
    WELFARE_BENEFITS = "welfare-benefits"
    DEBT_ADVICE = "debt-advice"
    EMPLOYMENT_TRAINING = "employment-training"
    ALCOHOL_AND_DRUG_SUPPORT = "substance-use"
    ALCOHOL = "alcohol"
    DRUGS = "drugs"
    LONELINESS_SOCIAL_INCLUSION = "loneliness-social-inclusion"
    CARERS_SUPPORT = "carers-support"
    PEER_SUPPORT = "peer-support"
    PHYSICAL_ACTIVITY_WELLBEING = "physical-activity-wellbeing"
    SAFE_SPACES = "safe-spaces"
    CRISIS_CAFE = "crisis-cafe"
    BEREAVEMENT = "bereavement"
    SUICIDE_PREVENTION = "suicide-prevention"
    DOMESTIC_ABUSE = "domestic-abuse"
    CULTURALLY_SPECIFIC = "culturally-specific"
    LGBTQ_SUPPORT = "lgbtq-support"
    YOUNG_PEOPLE = "young-people"
    COUNSELLING = "counselling"
    FOOD_ESSENTIALS = "food-essentials"
    LEGAL_ADVICE = "legal-advice"
    DIGITAL_INCLUSION = "digital-inclusion"
    EATING_DIFFICULTIES_SUPPORT = "eating-difficulties"
    NEURODIVERSITY = "neurodiversity"
    VETERANS_SUPPORT = "veterans-support"


CLINICAL_NEEDS: frozenset[Need] = frozenset(
    {
        Need.LOW_MOOD, Need.ANXIETY, Need.TRAUMA, Need.OCD, Need.SELF_HARM, Need.PSYCHOSIS, Need.BIPOLAR,
        Need.EATING_DIFFICULTIES, Need.PERSONALITY_DIFFICULTIES, Need.MEMORY_CONCERNS,
        Need.NEURODEVELOPMENTAL, Need.SUBSTANCE_USE,
    }
)  # fmt: skip
# Needs that call for medium/long-term specialist support rather than a short front-door offer.
COMPLEX_NEEDS: frozenset[Need] = frozenset(
    {Need.PSYCHOSIS, Need.BIPOLAR, Need.EATING_DIFFICULTIES, Need.PERSONALITY_DIFFICULTIES}
)
SOCIAL_NEEDS: frozenset[Need] = frozenset(Need) - CLINICAL_NEEDS


@dataclass(frozen=True)
class Rule:
    """One rule that fired: a stable id for audit and tests, and a sentence for the clinician."""

    id: str
    text: str


def _aware(at: datetime, what: str = "a moment") -> None:
    # Opening hours and deadlines are judged across clock changes: a naive time is ambiguous.
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValueError(f"{what} needs a time zone")
