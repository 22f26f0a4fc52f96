"""Every question and answer record of the agents round-trips through the wire codec
(so agents on other nodes take part the same way), with its field types intact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import foundation_trio as ft
from foundation_trio.agents import (
    AwardNotice,
    BidRequest,
    BundleRequest,
    CallForProposals,
    CancelTask,
    Choices,
    EndNegotiation,
    HealthCheck,
    Interval,
    NotUnderstood,
    OfferRequest,
    OfferResponse,
    OrderRequest,
    PriceOffer,
    ProposalAccepted,
    ProposalRejected,
    Propose,
    Question,
    Refusal,
    ValueBid,
    ValueBidRequest,
    ValueRequest,
    VoteRequest,
)

wire = ft.wire

# Bodies an agent may put in an ``Any`` field: nested tuples, frozensets, lists, dicts
# and registered records must come back as themselves, not as lists and dicts.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
)
_hashables = st.recursive(
    _scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
bodies = st.recursive(
    _hashables,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        | st.builds(Propose, st.floats(allow_nan=False), inner)
        | st.builds(Refusal, st.text(max_size=5))
    ),
    max_leaves=10,
)
deadlines = st.none() | st.floats(allow_nan=False, allow_infinity=False)

# One factory per record: (content: any body, key: a hashable body, deadline) -> record
RECORDS: dict[type[Any], Callable[[Any, Any, float | None], Any]] = {
    Refusal: lambda c, k, d: Refusal(repr(c)),
    HealthCheck: lambda c, k, d: HealthCheck(deadline=d),
    VoteRequest: lambda c, k, d: VoteRequest(topic="t", options=(c, k), deadline=d),
    ValueRequest: lambda c, k, d: ValueRequest(
        variable="v", current=c, version=3, options=(k,), deadline=d
    ),
    BidRequest: lambda c, k, d: BidRequest(
        auction_id="a", item="lamp", kind="second_price", reserve=1.5, deadline=d
    ),
    PriceOffer: lambda c, k, d: PriceOffer(
        auction_id="a", item="lamp", kind="english", price=2.0, round=4, deadline=d
    ),
    BundleRequest: lambda c, k, d: BundleRequest(auction_id="a", items=("x", "y"), deadline=d),
    AwardNotice: lambda c, k, d: AwardNotice(auction_id="a", item="x", price=3.0, deadline=d),
    OrderRequest: lambda c, k, d: OrderRequest(
        market_id="m", kind="call", round=0, best_bid=None, best_ask=9.5, deadline=d
    ),
    CallForProposals: lambda c, k, d: CallForProposals(cfp_id="c", task=c, deadline=d),
    Propose: lambda c, k, d: Propose(2.5, content=c),
    NotUnderstood: lambda c, k, d: NotUnderstood(repr(k)),
    ProposalAccepted: lambda c, k, d: ProposalAccepted(
        cfp_id="c", task=k, value=1.0, content=c, deadline=d
    ),
    ProposalRejected: lambda c, k, d: ProposalRejected(cfp_id="c", reason="r", deadline=d),
    CancelTask: lambda c, k, d: CancelTask(cfp_id="c", reason="r", deadline=d),
    EndNegotiation: lambda c, k, d: EndNegotiation("done"),
    OfferRequest: lambda c, k, d: OfferRequest(
        negotiation_id="n",
        round=2,
        space=Choices(("a", (1, 2))) if k in ("a", (1, 2)) else Choices(("a", (1, 2), k)),
        history=(("seller", c), ("buyer", None)),
        deadline=d,
    ),
    OfferResponse: lambda c, k, d: OfferResponse(
        negotiation_id="n", round=2, proposer="p", offer=c, space=Interval(0.0, 1.0), deadline=d
    ),
    ValueBidRequest: lambda c, k, d: ValueBidRequest(
        variable="v",
        current=c,
        version=1,
        domain="0..9",
        pricing="second",
        reserve=0.0,
        deadline=d,
    ),
    ValueBid: lambda c, k, d: ValueBid(c, 4.0),
    Choices: lambda c, k, d: Choices((k,)),
    Interval: lambda c, k, d: Interval(-1.0, 2.0),
}


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True would hide a
    tuple that came back as a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if hasattr(type(a), "__attrs_attrs__"):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in type(a).__attrs_attrs__)
    return bool(a == b)


@pytest.mark.parametrize("cls", list(RECORDS), ids=lambda cls: cls.__name__)
@settings(max_examples=40, deadline=None)
@given(content=bodies, key=_hashables, deadline=deadlines)
def test_every_agents_record_round_trips_through_the_wire(
    cls: type[Any], content: Any, key: Any, deadline: float | None
) -> None:
    record = RECORDS[cls](content, key, deadline)
    assert type(record) is cls
    back = wire.decode_body(wire.encode_body(record))
    assert _same(back, record), (record, back)
    assert wire.registered()[f"ft.agents.{cls.__name__}"] is cls


def _subclasses(cls: type[Any]) -> set[type[Any]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_question_of_the_agents_package_is_a_wire_record() -> None:
    questions = {
        q for q in _subclasses(Question) if q.__module__.startswith("foundation_trio.agents")
    }
    assert questions <= set(RECORDS)
    names = {cls: name for name, cls in wire.registered().items()}
    for cls in questions | set(RECORDS):
        assert names.get(cls) == f"ft.agents.{cls.__name__}", cls


def test_enum_answers_arrive_as_their_values_which_the_drivers_accept() -> None:
    from foundation_trio.protocols.markets import Side
    from foundation_trio.protocols.negotiation import Response

    orders = [(Side.BUY, 3, 10.0), (Side.SELL, 1, 9.0)]
    assert wire.decode_body(wire.encode_body(orders)) == [("buy", 3, 10.0), ("sell", 1, 9.0)]
    assert wire.decode_body(wire.encode_body(Response.ACCEPT)) == "accept"
