"""Served processes freeze what they hold at start, so full collections do not walk it; replacing
a large structure then collects what the old one left, once."""

from __future__ import annotations

import gc
import weakref

from shared.service import refreeze_after_replacing


class Node:
    def __init__(self) -> None:
        self.self = self  # a cycle: only the collector can free it


def test_refreezing_collects_what_a_replaced_structure_left() -> None:
    node = Node()
    gone = weakref.ref(node)
    gc.freeze()
    try:
        del node
        gc.collect()
        assert gone() is not None, "frozen: a full collection leaves it"
        refreeze_after_replacing()
        assert gone() is None
        assert gc.get_freeze_count() > 0, "and the process is frozen again"
    finally:
        gc.unfreeze()


def test_nothing_is_frozen_where_nothing_was() -> None:
    assert gc.get_freeze_count() == 0
    refreeze_after_replacing()
    assert gc.get_freeze_count() == 0
