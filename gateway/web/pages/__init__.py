"""The people's pages, one module per kind of work; each registers its router here (`ROUTERS`)
and its entries for the home page and the navigation (`TASKS`). `site.py` wires them all."""

from __future__ import annotations

from typing import Any

PAGE_ROUTERS: list[Any] = []
