"""Triage screening rules, as pure functions (no I/O, no database, no clock: `at` is passed in).

Triage is a trusted assessor, not an eligibility gate: `screen` always ends with an offer (a
clinical route, a team, or named partner services), and every step it takes is recorded as a
`Rule` a clinician can read. Coverage (place, network, pathway, candidate teams) comes from
`contracts.coverage`, the same rules the registry answers `/registry/resolve` with.

Split along its seams: `codes` (urgency order, risks, needs, `Rule`), `priority` (suggested
priority, crisis targets), `identity` (NHS number, name key, age), `matching` (partner services),
`screening` (out of area, re-access, `screen`) and `decisions` (the lifecycle and the rules a
decision keeps). Every public name is here too: `from services.triage.domain import X`.
"""

from __future__ import annotations

from contracts.vocabulary import EPISODE_ROUTES, Priority, Route, Source
from services.triage.domain.codes import (
    CLINICAL_NEEDS,
    COMPLEX_NEEDS,
    IMMINENT_RISKS,
    REQUESTED_PRIORITY,
    SOCIAL_NEEDS,
    URGENCY_ORDER,
    Need,
    RequestedUrgency,
    Risk,
    Rule,
    more_urgent,
)
from services.triage.domain.decisions import (
    INTAKE,
    LIFECYCLE,
    DecisionAction,
    DecisionRefused,
    Intake,
    ReferralStatus,
    Step,
    Target,
    TransferImpossible,
    Transition,
    TransitionRefused,
    check_backdating,
    check_decision,
    check_transfer,
    check_transfer_possible,
    decided_route,
    decided_team,
    held_for_identity,
    intake_step,
    next_step,
)
from services.triage.domain.identity import age_on, name_key, nhs_number_valid, normalise_nhs_number
from services.triage.domain.matching import DirectoryIndex, DirectoryServiceView, ServiceMatch, match_services
from services.triage.domain.priority import crisis_target, deadline, suggest_priority
from services.triage.domain.screening import (
    CRISIS_PRIORITIES,
    POSTCODE_AREAS,
    Discharge,
    ReferralFacts,
    Suggestion,
    hospital_liaison,
    receiving_area,
    screen,
)

__all__ = [
    "CLINICAL_NEEDS",
    "COMPLEX_NEEDS",
    "CRISIS_PRIORITIES",
    "EPISODE_ROUTES",
    "IMMINENT_RISKS",
    "INTAKE",
    "LIFECYCLE",
    "POSTCODE_AREAS",
    "REQUESTED_PRIORITY",
    "SOCIAL_NEEDS",
    "URGENCY_ORDER",
    "DecisionAction",
    "DecisionRefused",
    "DirectoryIndex",
    "DirectoryServiceView",
    "Discharge",
    "Intake",
    "Need",
    "Priority",
    "ReferralFacts",
    "ReferralStatus",
    "RequestedUrgency",
    "Risk",
    "Route",
    "Rule",
    "ServiceMatch",
    "Source",
    "Step",
    "Suggestion",
    "Target",
    "TransferImpossible",
    "Transition",
    "TransitionRefused",
    "age_on",
    "check_backdating",
    "check_decision",
    "check_transfer",
    "check_transfer_possible",
    "crisis_target",
    "deadline",
    "decided_route",
    "decided_team",
    "held_for_identity",
    "hospital_liaison",
    "intake_step",
    "match_services",
    "more_urgent",
    "name_key",
    "next_step",
    "nhs_number_valid",
    "normalise_nhs_number",
    "receiving_area",
    "screen",
    "suggest_priority",
]
