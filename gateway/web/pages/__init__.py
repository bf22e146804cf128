"""The people's pages, one module per kind of work. Each module has a `router` (prefix
`/app/<area>`, `include_in_schema=False`, `dependencies=[Depends(check_csrf)]`) and `TASKS`: the
entries the home page and the navigation show to the roles that do that work. Add a module to
`PAGE_MODULES` and it is served, listed and covered by the tests generated from the route table."""

from __future__ import annotations

from types import ModuleType

from gateway.web.pages import crisis, moderation, partner, reporting, team, triage

PAGE_MODULES: tuple[ModuleType, ...] = (triage, crisis, team, partner, moderation, reporting)
