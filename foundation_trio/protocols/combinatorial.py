"""Combinatorial auction: exact winner determination and VCG payments, bounded in size.

Bidders bid on bundles of items. An agent may submit several bundle bids, of which it
wins at most one (the XOR bidding language). An allocation is a set of winning bids with
pairwise disjoint bundles and distinct agents; its welfare is the (exactly rounded,
``math.fsum``) sum of the winning amounts.

Winner determination is exact: a depth-first branch and bound over the bids in priority
order (higher amount, then earlier ``seq``, then smaller agent id), trying "include" before
"exclude" and pruning a branch whose optimistic bound (the welfare so far plus the best
remaining amount of every agent not yet placed) cannot beat the best allocation found.
Among allocations of equal welfare the first in that search order wins, so the result is
deterministic. The problem is NP-hard, so instances over :class:`CombinatorialConfig`'s
limits (``max_bids``, ``max_items``) are refused with :class:`InstanceTooLarge`; they are
never solved approximately.

Payments are Vickrey-Clarke-Groves: a winner ``i`` pays the welfare the others would
have reached without it minus the welfare the others reach in the chosen allocation,
``p_i = W*(N \\ {i}) - (W*(N) - b_i)``; losers pay nothing. Since the others' part of the
allocation stays feasible without ``i``, and removing ``i`` never raises the optimum,
``0 <= p_i <= b_i`` (the payments are clamped into that interval against rounding only).
This costs one extra exact solve per winner.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence

import attrs

from foundation_trio.protocols.coordination import (
    AgentId,
    InstanceTooLarge,
    InvalidBid,
    SessionClosed,
    check_agent_id,
    check_amount,
    check_seq,
    priority_key,
)

__all__ = [
    "BundleBid",
    "CombinatorialAuction",
    "CombinatorialConfig",
    "CombinatorialResult",
    "CombinatorialStatus",
    "check_bundle_bid",
    "clear_combinatorial",
    "determine_winners",
]


@attrs.frozen(slots=True)
class BundleBid:
    """``agent`` offers ``amount`` (> 0) for all of ``items`` together."""

    agent: AgentId
    items: frozenset[str]
    amount: float
    seq: int = 0

    def key(self) -> tuple[float, int, AgentId, tuple[str, ...]]:
        return (*priority_key(self.amount, self.seq, self.agent), tuple(sorted(self.items)))


@attrs.frozen(slots=True)
class CombinatorialConfig:
    """Size limits of the exact solver: at most ``max_bids`` bundle bids over at most
    ``max_items`` items. The defaults solve in well under a second in pure Python."""

    max_bids: int = 24
    max_items: int = 64

    def __attrs_post_init__(self) -> None:
        for name in ("max_bids", "max_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CombinatorialConfig.{name} must be an int >= 1, got {value!r}")


class CombinatorialStatus(enum.Enum):
    ALLOCATED = "allocated"
    NO_SALE = "no_sale"


@attrs.frozen(slots=True)
class CombinatorialResult:
    """The allocation (winning bids, by agent id), VCG payments and welfare."""

    status: CombinatorialStatus
    winners: tuple[BundleBid, ...]
    payments: tuple[tuple[AgentId, float], ...]
    welfare: float
    bids: tuple[BundleBid, ...]
    rejected: tuple[tuple[AgentId, str], ...] = ()
    reason: str | None = None

    def payment(self, agent: AgentId) -> float:
        """What ``agent`` pays: its VCG payment if it won, else 0.0."""
        return dict(self.payments).get(agent, 0.0)


def check_bundle_bid(bid: object, items: frozenset[str]) -> BundleBid:
    """Return ``bid`` if it is a valid :class:`BundleBid` over ``items``, else raise.

    Raises ``TypeError`` for a non-BundleBid, :class:`InvalidBid` for an empty bundle,
    an unknown item, or an amount that is not a finite number > 0.
    """
    if not isinstance(bid, BundleBid):
        raise TypeError(f"bids must hold BundleBid records, got {type(bid).__name__}")
    check_agent_id(bid.agent, "BundleBid.agent")
    check_seq(bid.seq, "BundleBid.seq")
    if not isinstance(bid.items, frozenset) or not bid.items:
        raise InvalidBid(bid.agent, "bundle must be a non-empty frozenset of items")
    unknown = bid.items - items
    if unknown:
        raise InvalidBid(bid.agent, f"unknown items {sorted(map(str, unknown))}")
    try:
        amount = check_amount(bid.amount, "amount")
    except (TypeError, ValueError) as error:
        raise InvalidBid(bid.agent, str(error)) from None
    if not amount > 0:
        raise InvalidBid(bid.agent, f"amount must be > 0, got {bid.amount!r}")
    return bid


def _check_size(
    bids: Sequence[BundleBid], items: frozenset[str], config: CombinatorialConfig
) -> None:
    if len(bids) > config.max_bids:
        raise InstanceTooLarge(
            f"{len(bids)} bundle bids exceed max_bids={config.max_bids}; the exact solver "
            "refuses the instance (raise the limit knowingly, or split the auction)"
        )
    if len(items) > config.max_items:
        raise InstanceTooLarge(
            f"{len(items)} items exceed max_items={config.max_items}; the exact solver "
            "refuses the instance"
        )


def _solve(ranked: Sequence[BundleBid], masks: Sequence[int]) -> tuple[float, tuple[int, ...]]:
    """Best welfare and the indexes of its bids, over ``ranked`` (in priority order)."""
    n = len(ranked)
    best_value = 0.0
    best: tuple[int, ...] = ()
    chosen: list[int] = []
    used_agents: set[AgentId] = set()

    def bound(start: int) -> float:
        # Optimistic: every agent not yet placed adds its best remaining amount.
        top: dict[AgentId, float] = {}
        for j in range(start, n):
            agent = ranked[j].agent
            if agent not in used_agents and ranked[j].amount > top.get(agent, 0.0):
                top[agent] = ranked[j].amount
        return math.fsum([*(ranked[k].amount for k in chosen), *top.values()])

    def search(start: int, used_items: int) -> None:
        nonlocal best_value, best
        value = math.fsum(ranked[k].amount for k in chosen)
        if value > best_value:
            best_value, best = value, tuple(chosen)
        if start >= n or bound(start) <= best_value:
            return
        bid = ranked[start]
        if bid.agent not in used_agents and not used_items & masks[start]:
            chosen.append(start)
            used_agents.add(bid.agent)
            search(start + 1, used_items | masks[start])
            used_agents.discard(bid.agent)
            chosen.pop()
        search(start + 1, used_items)

    search(0, 0)
    return best_value, best


def determine_winners(
    bids: Sequence[BundleBid],
    *,
    items: Iterable[str],
    config: CombinatorialConfig | None = None,
) -> tuple[float, tuple[BundleBid, ...]]:
    """Exact winner determination: the optimal welfare and its winning bids (by agent).

    Raises :class:`InstanceTooLarge` over the size limits, :class:`InvalidBid` for a bad
    bid (see :func:`check_bundle_bid`).
    """
    config = config if config is not None else CombinatorialConfig()
    item_set = _check_items(items)
    checked = [check_bundle_bid(b, item_set) for b in bids]
    _check_size(checked, item_set, config)
    return _determine(checked, item_set)


def _check_items(items: Iterable[str]) -> frozenset[str]:
    if isinstance(items, str):
        raise TypeError("items must be an iterable of item names, not a single str")
    item_set = frozenset(items)
    for item in item_set:
        if not isinstance(item, str):
            raise TypeError(f"items must be strings, got {type(item).__name__} {item!r}")
    return item_set


def _determine(
    bids: Sequence[BundleBid], items: frozenset[str]
) -> tuple[float, tuple[BundleBid, ...]]:
    index = {item: i for i, item in enumerate(sorted(items))}
    ranked = sorted(bids, key=BundleBid.key)
    masks = [sum(1 << index[item] for item in bid.items) for bid in ranked]
    welfare, chosen = _solve(ranked, masks)
    winners = tuple(sorted((ranked[k] for k in chosen), key=lambda b: b.agent))
    return welfare, winners


def clear_combinatorial(
    bids: Sequence[BundleBid],
    *,
    items: Iterable[str],
    config: CombinatorialConfig | None = None,
    rejected: Sequence[tuple[AgentId, str]] = (),
) -> CombinatorialResult:
    """Allocate ``items`` to ``bids`` optimally and compute VCG payments.

    No bid is a ``NO_SALE`` result. Raises :class:`InstanceTooLarge` over the size
    limits and :class:`InvalidBid` for a bad bid.
    """
    config = config if config is not None else CombinatorialConfig()
    item_set = _check_items(items)
    checked = [check_bundle_bid(b, item_set) for b in bids]
    _check_size(checked, item_set, config)
    ranked = tuple(sorted(checked, key=BundleBid.key))
    if not checked:
        return CombinatorialResult(
            status=CombinatorialStatus.NO_SALE,
            winners=(),
            payments=(),
            welfare=0.0,
            bids=(),
            rejected=tuple(rejected),
            reason="no valid bid",
        )
    welfare, winners = _determine(checked, item_set)
    payments: list[tuple[AgentId, float]] = []
    for winner in winners:
        without, _ = _determine([b for b in checked if b.agent != winner.agent], item_set)
        others = math.fsum(w.amount for w in winners if w.agent != winner.agent)
        payment = min(max(without - others, 0.0), winner.amount)
        payments.append((winner.agent, payment))
    return CombinatorialResult(
        status=CombinatorialStatus.ALLOCATED,
        winners=winners,
        payments=tuple(payments),
        welfare=welfare,
        bids=ranked,
        rejected=tuple(rejected),
    )


class CombinatorialAuction:
    """Collects bundle bids from invited agents until ``deadline``, then clears them.

    :meth:`submit` takes one agent's answer (an iterable of ``(items, amount)`` pairs);
    an answer that is late, from a non-participant, a second answer, or holds an
    invalid bundle bid is rejected as a whole with its reason. :meth:`close` clears the
    auction and raises :class:`InstanceTooLarge` when the bids received exceed the limits.
    """

    def __init__(
        self,
        participants: Iterable[AgentId],
        *,
        items: Iterable[str],
        deadline: float,
        config: CombinatorialConfig | None = None,
    ) -> None:
        if isinstance(participants, str):
            raise TypeError("participants must be an iterable of agent ids, not a single str")
        self.participants = frozenset(check_agent_id(a, "participants item") for a in participants)
        self.items = _check_items(items)
        if not self.items:
            raise ValueError("items must name at least one item")
        self.deadline = check_amount(deadline, "deadline")
        self.config = config if config is not None else CombinatorialConfig()
        self._bids: dict[AgentId, list[BundleBid]] = {}
        self._rejected: list[tuple[AgentId, str]] = []
        self._result: CombinatorialResult | None = None

    def submit(
        self, agent: AgentId, answer: object, *, seq: int, now: float
    ) -> tuple[BundleBid, ...] | str:
        """Record ``agent``'s bundle bids; return them, or the rejection reason."""
        if self._result is not None:
            raise SessionClosed(f"combinatorial auction is closed; bids from {agent!r} not taken")
        check_agent_id(agent, "agent")
        check_seq(seq, "seq")
        now = check_amount(now, "now")
        reason: str | None = None
        found: list[BundleBid] = []
        if agent not in self.participants:
            reason = "not_invited"
        elif now > self.deadline:
            reason = "late"
        elif agent in self._bids:
            reason = "duplicate"
        else:
            try:
                found = self._parse(agent, answer, seq)
            except InvalidBid as error:
                reason = f"invalid: {error.reason}"
        if reason is not None:
            self._rejected.append((agent, reason))
            return reason
        self._bids[agent] = found
        return tuple(found)

    def _parse(self, agent: AgentId, answer: object, seq: int) -> list[BundleBid]:
        if isinstance(answer, str | bytes) or not isinstance(answer, Iterable):
            raise InvalidBid(agent, "answer must be an iterable of (items, amount) pairs")
        found: list[BundleBid] = []
        for entry in answer:
            if not isinstance(entry, tuple | list) or len(entry) != 2:
                raise InvalidBid(agent, f"bundle bid {entry!r} is not an (items, amount) pair")
            items, amount = entry
            if isinstance(items, str) or not isinstance(items, Iterable):
                raise InvalidBid(agent, f"bundle {items!r} is not an iterable of items")
            bundle = frozenset(items)
            bid = BundleBid(agent, bundle, amount, seq)
            found.append(check_bundle_bid(bid, self.items))
        return found

    def close(self) -> CombinatorialResult:
        """Clear the auction; a second call returns the same result."""
        if self._result is None:
            bids = [b for agent_bids in self._bids.values() for b in agent_bids]
            self._result = clear_combinatorial(
                bids, items=self.items, config=self.config, rejected=self._rejected
            )
        return self._result
