"""Who may see and change the directory's private records: the one home of its organisation
binding (the public Open Referral UK reads are open by the standard and bound to no one).

- A VCFSE partner edits, and sees the edits of, the services of its own organisation only
  (matched by its charity or company number, `Organization.identifier`); a moderator sees every
  edit.
- A warm handover is seen and answered only by the organisation it was offered to.
No route filters on the caller's organisation itself (`tests/security/test_access_rules.py`).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement

from services.directory.models import Edit, Handover, Organization
from shared.auth import Caller


def own_organisation(caller: Caller) -> ColumnElement[bool]:
    """The caller's own organisation row (join services to it to keep the caller's services)."""
    return Organization.identifier == caller.organisation


def owner_of(caller: Caller) -> str:
    """The organisation an edit the caller proposes is bound to (`own_edits`)."""
    return caller.organisation


def own_edits(caller: Caller) -> ColumnElement[bool]:
    return Edit.owner == owner_of(caller)


def own_handovers(caller: Caller) -> ColumnElement[bool]:
    """Handovers offered to the caller's organisation."""
    return Handover.owner == caller.organisation
