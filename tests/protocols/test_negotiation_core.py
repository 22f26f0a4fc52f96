"""Contract Net, alternating offers and reputation cores."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from foundation_trio.protocols.contract_net import (
    Accept,
    Cancel,
    ContractNet,
    ContractNetConfig,
    ContractNetStatus,
    Effect,
    Objective,
    Reject,
)
from foundation_trio.protocols.coordination import SessionClosed
from foundation_trio.protocols.negotiation import (
    AlternatingOffers,
    Choices,
    Interval,
    NegotiationStatus,
    Response,
)
from foundation_trio.protocols.reputation import ReputationBook, ReputationConfig

# -- Contract Net ------------------------------------------------------------------------


def test_cfp_accepts_the_best_proposal_and_rejects_the_others() -> None:
    net = ContractNet(["a", "b", "c", "d"], deadline=5.0, config=ContractNetConfig(standby=0))
    assert net.propose("a", 7.0, seq=0, now=1.0) == ()
    net.propose("b", 3.0, seq=1, now=1.0)
    net.propose("c", 3.0, seq=2, now=1.0)  # same cost, later: b wins the tie
    net.refuse("d", "busy")
    effects = net.close_proposals()
    assert [(type(e).__name__, e.agent) for e in effects] == [
        ("Accept", "b"),
        ("Reject", "c"),
        ("Reject", "a"),
    ]
    assert isinstance(effects[0], Accept) and effects[0].proposal.value == 3.0
    assert net.done("b", {"report": 1}) == ()
    result = net.result
    assert result is not None
    assert (result.status, result.contractor, result.result) == (
        ContractNetStatus.COMPLETED,
        "b",
        {"report": 1},
    )
    assert result.refused == (("d", "busy"),)
    assert [p.agent for p in result.proposals] == ["b", "c", "a"]


def test_maximize_objective_takes_the_highest_value() -> None:
    net = ContractNet(
        ["a", "b"], deadline=5.0, config=ContractNetConfig(objective=Objective.MAXIMIZE)
    )
    net.propose("a", 7.0, seq=0, now=1.0)
    net.propose("b", 3.0, seq=1, now=1.0)
    effects = net.close_proposals()
    assert isinstance(effects[0], Accept) and effects[0].agent == "a"


def test_late_proposals_are_rejected_at_once_and_never_evaluated() -> None:
    net = ContractNet(["a", "b"], deadline=5.0)
    net.propose("a", 9.0, seq=0, now=1.0)
    assert net.propose("b", 0.1, seq=1, now=6.0) == (
        Reject("b", "late: proposals closed before it arrived"),
    )
    effects = net.close_proposals()
    assert isinstance(effects[0], Accept) and effects[0].agent == "a"
    net.done("a")
    assert net.result is not None and net.result.late == ("b",)


def test_failed_contractor_is_replaced_by_the_next_best_proposal() -> None:
    net = ContractNet(["a", "b", "c"], deadline=5.0, config=ContractNetConfig(standby=1))
    for seq, (agent, cost) in enumerate([("a", 1.0), ("b", 2.0), ("c", 3.0)]):
        net.propose(agent, cost, seq=seq, now=1.0)
    first = net.close_proposals()
    assert [(type(e).__name__, e.agent) for e in first] == [("Accept", "a"), ("Reject", "c")]
    second = net.failure("a", "crashed")
    assert [(type(e).__name__, e.agent) for e in second] == [("Accept", "b")]
    assert net.contractor == "b"
    assert net.failure("b", "timed out") == ()
    result = net.result
    assert result is not None and result.status is ContractNetStatus.FAILED
    assert result.failures == (("a", "crashed"), ("b", "timed out"))
    assert result.contractor is None
    assert "no proposal is left" in (result.reason or "")


def test_completion_rejects_the_proposals_held_in_reserve() -> None:
    net = ContractNet(["a", "b", "c"], deadline=5.0, config=ContractNetConfig(standby=2))
    for seq, agent in enumerate("abc"):
        net.propose(agent, float(seq), seq=seq, now=1.0)
    assert [e.agent for e in net.close_proposals()] == ["a"]
    assert net.done("a", 42) == (
        Reject("b", "contract completed by 'a'"),
        Reject("c", "contract completed by 'a'"),
    )


def test_cancel_sends_cancel_to_the_contractor_and_rejects_the_reserve() -> None:
    net = ContractNet(["a", "b"], deadline=5.0)
    net.propose("a", 1.0, seq=0, now=1.0)
    net.propose("b", 2.0, seq=1, now=1.0)
    net.close_proposals()
    assert net.cancel("changed my mind") == (
        Cancel("a", "changed my mind"),
        Reject("b", "changed my mind"),
    )
    assert net.result is not None and net.result.status is ContractNetStatus.CANCELLED
    with pytest.raises(SessionClosed):
        net.done("a")


def test_no_valid_proposal_is_a_no_proposals_result() -> None:
    net = ContractNet(["a", "b", "c"], deadline=5.0)
    net.refuse("a")
    net.not_understood("b")
    net.propose("c", math.nan, seq=0, now=1.0)
    assert net.close_proposals() == (Reject("c", "invalid proposal"),)
    result = net.result
    assert result is not None and result.status is ContractNetStatus.NO_PROPOSALS
    assert (result.not_understood, result.invalid) == (("b",), ("c",))


def test_contract_net_rejects_misuse() -> None:
    net = ContractNet(["a"], deadline=5.0)
    with pytest.raises(ValueError, match="not the working contractor"):
        net.done("a")
    net.propose("a", 1.0, seq=0, now=1.0)
    net.close_proposals()
    with pytest.raises(SessionClosed, match="already closed"):
        net.close_proposals()
    with pytest.raises(ValueError, match="not the working contractor"):
        net.failure("z", "x")
    with pytest.raises(ValueError, match="standby"):
        ContractNetConfig(standby=-1)
    with pytest.raises(ValueError, match="participants"):
        ContractNet([], deadline=1.0)


answer_kinds = st.sampled_from(
    ["propose", "refuse", "not_understood", "late", "invalid", "silent", "twice"]
)


@given(
    plan=st.lists(st.tuples(answer_kinds, st.integers(0, 9)), min_size=1, max_size=8),
    outcomes=st.lists(st.sampled_from(["done", "failure", "cancel"]), min_size=1, max_size=8),
    standby=st.integers(0, 3),
    cancel_early=st.booleans(),
)
def test_every_proposer_gets_exactly_one_accept_or_reject(
    plan: list[tuple[str, int]], outcomes: list[str], standby: int, cancel_early: bool
) -> None:
    agents = [f"a{i}" for i in range(len(plan))]
    net = ContractNet(agents, deadline=5.0, config=ContractNetConfig(standby=standby))
    sent: list[Effect] = []
    proposers: set[str] = set()
    for seq, (agent, (kind, cost)) in enumerate(zip(agents, plan, strict=True)):
        if kind in ("propose", "twice", "late", "invalid"):
            proposers.add(agent)
            value = math.nan if kind == "invalid" else float(cost)
            sent += net.propose(agent, value, seq=seq, now=6.0 if kind == "late" else 1.0)
            if kind == "twice":
                sent += net.propose(agent, 0.0, seq=seq + 100, now=1.0)
        elif kind == "refuse":
            sent += net.refuse(agent)
        elif kind == "not_understood":
            sent += net.not_understood(agent)
    if cancel_early:
        sent += net.cancel()
    else:
        sent += net.close_proposals()
        for outcome in outcomes:
            if net.result is not None:
                break
            assert net.contractor is not None
            if outcome == "done":
                sent += net.done(net.contractor)
            elif outcome == "failure":
                sent += net.failure(net.contractor, "failed")
            else:
                sent += net.cancel()
        if net.result is None:
            assert net.contractor is not None
            sent += net.done(net.contractor)
    answers = Counter(e.agent for e in sent if isinstance(e, Accept | Reject))
    accepts = Counter(e.agent for e in sent if isinstance(e, Accept))
    failed = {a for a, _ in (net.result.failures if net.result else ())}
    for agent in proposers:
        # A replaced contractor got its accept, then failed: still exactly one answer.
        assert answers[agent] == 1, (agent, sent)
    assert set(answers) == proposers
    assert all(n == 1 for n in accepts.values())
    assert failed <= set(accepts)


# -- alternating offers ------------------------------------------------------------------


def test_agreement_is_in_the_space_and_accepted_by_all() -> None:
    talk = AlternatingOffers(["a", "b", "c"], Interval(0.0, 2.0))
    assert talk.proposer == "a" and talk.responders == ("b", "c")
    assert talk.offer("a", 1.8, now=0.0) is None
    assert talk.respond({"b": Response.ACCEPT, "c": Response.REJECT}, now=1.0) is None
    assert talk.proposer == "b"
    talk.offer("b", 0.9, now=2.0)
    result = talk.respond({"c": Response.ACCEPT, "a": Response.ACCEPT}, now=3.0)
    assert result is not None
    assert (result.status, result.agreement, result.rounds) == (NegotiationStatus.AGREED, 0.9, 2)
    assert result.history[-1].responses == (("c", Response.ACCEPT), ("a", Response.ACCEPT))


def test_end_by_anyone_breaks_the_negotiation() -> None:
    talk = AlternatingOffers(["a", "b", "c"], Choices(("x", "y")))
    talk.offer("a", "x", now=0.0)
    result = talk.respond({"b": Response.END, "c": Response.ACCEPT}, now=0.0)
    assert result is not None
    assert (result.status, result.ended_by, result.agreement) == (
        NegotiationStatus.BROKEN,
        "b",
        None,
    )
    talk = AlternatingOffers(["a", "b"], Choices(("x", "y")))
    assert talk.end("a", now=0.0).ended_by == "a"
    with pytest.raises(SessionClosed):
        talk.offer("a", "x", now=0.0)


def test_a_crashed_party_breaks_it_with_the_error_recorded() -> None:
    talk = AlternatingOffers(["a", "b"], Choices(("x",)))
    result = talk.fail("b", "ZeroDivisionError('boom')", now=0.0)
    assert result.status is NegotiationStatus.BROKEN
    assert result.errors == (("b", "ZeroDivisionError('boom')"),)


def test_limits_give_a_timeout_result() -> None:
    talk = AlternatingOffers(["a", "b"], Interval(0, 1), max_rounds=2)
    talk.offer("a", 0.5, now=0.0)
    assert talk.respond({}, now=0.0) is None  # a missing answer counts as a reject
    talk.offer("b", 0.5, now=0.0)
    result = talk.respond({"a": Response.REJECT}, now=0.0)
    assert result is not None and result.status is NegotiationStatus.TIMED_OUT
    assert result.history[0].responses == (("b", Response.REJECT),)
    talk = AlternatingOffers(["a", "b"], Interval(0, 1), deadline=10.0)
    assert talk.tick(9.0) is None
    timed_out = talk.offer("a", 0.5, now=10.5)
    assert timed_out is not None and timed_out.status is NegotiationStatus.TIMED_OUT


def test_an_offer_outside_the_space_or_no_offer_loses_the_turn() -> None:
    talk = AlternatingOffers(["a", "b"], Interval(0.0, 2.0))
    assert talk.offer("a", 2.5, now=0.0) is None
    assert talk.proposer == "b"
    assert talk.skip("b", "timed out", now=0.0) is None
    assert talk.proposer == "a"
    talk.offer("a", 1.0, now=0.0)
    result = talk.respond({"b": Response.ACCEPT}, now=0.0)
    assert result is not None and result.agreement == 1.0
    assert [r.note for r in result.history] == ["outside the space", "timed out", None]


def test_negotiation_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="at least 2 parties"):
        AlternatingOffers(["a"], Interval(0, 1))
    with pytest.raises(ValueError, match=r"Interval\.low"):
        Interval(2, 1)
    talk = AlternatingOffers(["a", "b"], Interval(0, 1))
    with pytest.raises(ValueError, match="turn"):
        talk.offer("b", 0.5, now=0.0)
    with pytest.raises(RuntimeError, match="expects offer"):
        talk.respond({}, now=0.0)
    talk.offer("a", 0.5, now=0.0)
    with pytest.raises(ValueError, match="not a responder"):
        talk.respond({"a": Response.ACCEPT}, now=0.0)


@given(
    answers=st.lists(
        st.tuples(
            st.floats(-1, 3, allow_nan=False),
            st.lists(st.sampled_from(Response), min_size=2, max_size=2),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_agreement_is_in_the_space_and_accepted_by_every_other_party(
    answers: list[tuple[float, list[Response]]],
) -> None:
    space = Interval(0.0, 2.0)
    talk = AlternatingOffers(["a", "b", "c"], space, max_rounds=8)
    result = None
    for value, responses in answers:
        result = talk.offer(talk.proposer, value, now=0.0)
        if result is None and talk.awaiting_responses:
            result = talk.respond(dict(zip(talk.responders, responses, strict=True)), now=0.0)
        if result is not None:
            break
    if result is not None and result.status is NegotiationStatus.AGREED:
        assert space.contains(result.agreement)
        last = result.history[-1]
        assert last.offer == result.agreement
        assert {a for a, r in last.responses if r is Response.ACCEPT} == {"a", "b", "c"} - {
            last.proposer
        }


# -- reputation --------------------------------------------------------------------------


def test_reputation_is_a_decayed_average_starting_at_one_half() -> None:
    book = ReputationBook(ReputationConfig(decay=0.5))
    assert book.score("a") == 0.5
    assert book.report("a", "t1", 1.0) is True
    assert book.score("a") == 0.75
    assert book.report("a", "t2", 0.0) is True
    assert book.score("a") == 0.375
    assert book.reports("a") == 2


def test_duplicate_task_ids_are_ignored() -> None:
    book = ReputationBook()
    book.report("a", "t1", 1.0)
    before = book.score("a")
    assert book.report("a", "t1", 0.0) is False
    assert book.score("a") == before
    assert book.report("b", "t1", 0.0) is True  # the same task id for another agent counts


@given(qualities=st.lists(st.floats(0, 1), max_size=30))
def test_reputation_stays_in_the_unit_interval(qualities: list[float]) -> None:
    book = ReputationBook()
    for i, q in enumerate(qualities):
        book.report("a", i, q)
        assert 0.0 <= book.score("a") <= 1.0


def test_reputation_as_gate_and_tie_breaker() -> None:
    book = ReputationBook()
    book.report("good", 1, 1.0)
    book.report("bad", 1, 0.0)
    assert book.eligible(["good", "bad", "new"], 0.5) == {"good", "new"}
    assert book.rank(["new", "bad", "good", "b2"]) == ["good", "b2", "new", "bad"]
    with pytest.raises(ValueError, match="quality"):
        book.report("a", 2, 1.5)
    with pytest.raises(ValueError, match="decay"):
        ReputationConfig(decay=1.0)
    with pytest.raises(TypeError, match="task_id"):
        book.report("a", [1], 0.5)  # type: ignore[arg-type]


class ContractNetMachine(RuleBasedStateMachine):
    """Any interleaving of answers, deadline, completion, failures and cancel: every
    proposer ends with exactly one accept or reject, and one contractor works at a time."""

    AGENTS = ("a", "b", "c", "d", "e")

    def __init__(self) -> None:
        super().__init__()
        self.net = ContractNet(self.AGENTS, deadline=5.0, config=ContractNetConfig(standby=2))
        self.sent: list[Effect] = []
        self.proposers: set[str] = set()
        self.first_answered: set[str] = set()
        self.failed: set[str] = set()
        self.seq = 0

    def feed(self, effects: tuple[Effect, ...]) -> None:
        self.sent.extend(effects)

    @rule(agent=st.sampled_from(AGENTS), cost=st.integers(0, 5), late=st.booleans())
    def propose(self, agent: str, cost: int, late: bool) -> None:
        if agent not in self.first_answered:
            self.first_answered.add(agent)
            self.proposers.add(agent)
        self.seq += 1
        self.feed(self.net.propose(agent, float(cost), seq=self.seq, now=6.0 if late else 1.0))

    @precondition(lambda self: self.net.result is None)
    @rule(agent=st.sampled_from(AGENTS))
    def refuse(self, agent: str) -> None:
        self.first_answered.add(agent)
        self.feed(self.net.refuse(agent))

    @precondition(lambda self: self.net.result is None and self.net.contractor is None)
    @rule()
    def close(self) -> None:
        self.feed(self.net.close_proposals())

    @precondition(lambda self: self.net.result is None and self.net.contractor is not None)
    @rule(succeed=st.booleans())
    def contractor_reports(self, succeed: bool) -> None:
        contractor = self.net.contractor
        assert contractor is not None
        if succeed:
            self.feed(self.net.done(contractor, "ok"))
        else:
            self.failed.add(contractor)
            self.feed(self.net.failure(contractor, "broke"))

    @precondition(lambda self: self.net.result is None)
    @rule()
    def cancel(self) -> None:
        self.feed(self.net.cancel())

    @invariant()
    def at_most_one_answer_each_and_one_accept_outstanding(self) -> None:
        answered = Counter(e.agent for e in self.sent if isinstance(e, Accept | Reject))
        assert all(n == 1 for n in answered.values()), self.sent
        assert set(answered) <= self.proposers
        working = [
            e.agent for e in self.sent if isinstance(e, Accept) and e.agent not in self.failed
        ]
        assert len(working) <= 1

    @invariant()
    def once_over_every_proposer_has_its_answer(self) -> None:
        if self.net.result is None:
            return
        answered = {e.agent for e in self.sent if isinstance(e, Accept | Reject)}
        # Proposals that arrived while open were all answered; later ones at arrival.
        assert answered == self.proposers


TestContractNetMachine = ContractNetMachine.TestCase
TestContractNetMachine.settings = settings(max_examples=80, stateful_step_count=25)
