"""Neighbour sets of the society topologies, as pure functions of positions.

Members are numbered 0..n-1 in the society's member order (pool order, then
the order workers were added). A restarted worker keeps its position, so its
neighbours do not change when its pid does.
"""

from __future__ import annotations

from typing import Literal

Topology = Literal["mesh", "ring", "tree"]
"""How the members of a society are connected for member-to-member messaging."""

TOPOLOGIES: tuple[Topology, ...] = ("mesh", "ring", "tree")


def neighbour_positions(topology: Topology, position: int, size: int, fanout: int) -> list[int]:
    """The positions adjacent to ``position`` among ``size`` members, ascending.

    - ``mesh``: every other member.
    - ``ring``: the previous and the next member, wrapping around (one neighbour
      when there are two members, none when alone).
    - ``tree``: a complete ``fanout``-ary tree laid out breadth first: member
      ``i``'s parent is ``(i - 1) // fanout`` and its children are
      ``fanout * i + 1`` ... ``fanout * i + fanout`` (those that exist).
    """
    if not 0 <= position < size:
        raise ValueError(f"position {position} is outside 0..{size - 1}")
    if topology == "mesh":
        return [p for p in range(size) if p != position]
    if topology == "ring":
        found = {(position - 1) % size, (position + 1) % size} - {position}
        return sorted(found)
    if topology == "tree":
        found_tree: list[int] = []
        if position > 0:
            found_tree.append((position - 1) // fanout)
        first = fanout * position + 1
        found_tree.extend(range(first, min(first + fanout, size)))
        return found_tree
    raise ValueError(f"unknown topology {topology!r}; expected one of {TOPOLOGIES}")


__all__ = ["TOPOLOGIES", "Topology", "neighbour_positions"]
