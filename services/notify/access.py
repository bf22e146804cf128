"""Who may see and change notification subscriptions: the organisation that registered one, only.
The one home of notify's organisation binding (`tests/security/test_access_rules.py`)."""

from __future__ import annotations

from sqlalchemy import ColumnElement

from services.notify.models import NotifySubscription
from shared.auth import Caller


def owner_of(caller: Caller) -> str:
    """The organisation a subscription the caller registers is bound to (`own_subscriptions`)."""
    return caller.organisation


def own_subscriptions(caller: Caller) -> ColumnElement[bool]:
    return NotifySubscription.owner_org == owner_of(caller)
