"""What triage's `cmh.triage.referral.*` events say about a referral: one builder, so every event
(from a decision, from intake, or from careplan's episode ending) carries the same facts."""

from __future__ import annotations

import json
from typing import Any

from services.triage.models import Referral


def referral_facts(referral: Referral) -> dict[str, Any]:
    """Ids, codes, state and the demographics reporting groups by (no name, contact or free text)."""
    details = json.loads(referral.details)
    return {
        "sex": details.get("sex"),
        "ethnicity": details.get("ethnicity"),
        "referral_id": referral.id,
        "person_id": referral.person_id,
        "received_at": referral.received_at.isoformat(),
        "source": referral.source,
        "referring_organisation": referral.referring_org,
        "crisis": referral.crisis,
        "age": referral.age,
        "place": referral.place_key,
        "network_id": referral.network_id,
        "team_id": referral.team_id,
        "pathway": referral.pathway,
        "priority": referral.priority,
        "status": referral.status,
        "route": referral.route,
        "care_ended_at": referral.care_ended_at.isoformat() if referral.care_ended_at else None,
        "version": referral.version,
    }
