"""The pure voting core: rules over the electorate, rejections, early termination that
never flips an outcome, order independence, abstentions, Byzantine mode."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import foundation_trio.protocols.voting as voting
from foundation_trio.protocols.coordination import NotAParticipant, SessionClosed
from foundation_trio.protocols.voting import (
    ABSTAIN,
    AlreadyVoted,
    Cast,
    Close,
    Fixed,
    InsufficientParticipants,
    InvalidChoice,
    Lose,
    VotingSession,
    byzantine_quorum,
)

MEMBERS = ["a", "b", "c", "d", "e"]


def test_the_voting_core_imports_no_event_loop():
    tree = ast.parse(Path(voting.__file__).read_text(encoding="utf-8"))
    imported = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert not {m for m in imported if m.split(".")[0] in {"trio", "anyio", "asyncio"}}
    assert all(
        not m.startswith("foundation_trio") or m.startswith("foundation_trio.protocols")
        for m in imported
    )


# -- rejections -------------------------------------------------------------------------


def test_non_members_second_votes_and_votes_after_close_are_rejected():
    session = VotingSession("s1", MEMBERS, options=("x", "y"))
    with pytest.raises(NotAParticipant, match="'mallory'"):
        session.cast("mallory", "x")
    session.cast("a", "x")
    with pytest.raises(AlreadyVoted, match="'a'"):
        session.cast("a", "y")
    with pytest.raises(InvalidChoice, match="'z'"):
        session.cast("b", "z")
    with pytest.raises(InvalidChoice, match="hashable"):
        VotingSession("s", MEMBERS).cast("b", ["x"])
    session.close()
    with pytest.raises(SessionClosed):
        session.cast("c", "x")
    assert session.result is not None and session.result.ballots == 1


def test_votes_after_the_result_is_fixed_are_rejected():
    session = VotingSession("s", MEMBERS)
    for voter in "abc":
        session.cast(voter, "x")
    assert session.result is not None and session.result.choice == "x"
    with pytest.raises(SessionClosed):
        session.cast("d", "x")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rule": "plurality"}, ValueError, "rule"),
        ({"rule": "supermajority", "supermajority": (1, 3)}, ValueError, "1/2, 1"),
        ({"rule": "supermajority", "supermajority": (2, 0)}, TypeError, "supermajority"),
        ({"rule": "weighted", "threshold": 1.5}, ValueError, "threshold"),
        ({"rule": "weighted", "weights": {"zed": 1}}, ValueError, "non-members"),
        ({"rule": "weighted", "weights": {"a": -1}}, ValueError, "weight of 'a'"),
        ({"rule": "weighted", "weights": dict.fromkeys(MEMBERS, 0)}, ValueError, "total"),
        ({"weights": {"a": 2}}, ValueError, "weighted rule"),
        ({"quorum": -1}, ValueError, "quorum"),
        ({"byzantine_f": -1}, ValueError, "byzantine_f"),
        ({"rule": "weighted", "byzantine_f": 1}, ValueError, "byzantine"),
    ],
)
def test_bad_session_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        VotingSession("s", MEMBERS, **kwargs)


def test_electorate_must_be_distinct_non_empty_ids():
    with pytest.raises(ValueError, match="twice"):
        VotingSession("s", ["a", "a"])
    with pytest.raises(TypeError, match="non-empty"):
        VotingSession("s", ["a", ""])
    with pytest.raises(InsufficientParticipants):
        VotingSession("s", [])


# -- rules over the electorate ----------------------------------------------------------------


def test_majority_threshold_uses_the_electorate_not_the_ballots():
    session = VotingSession("s", MEMBERS)
    session.cast("a", "x")
    session.cast("b", "x")
    # 2 of 2 ballots, but 2 of 5 members: no majority
    result = session.close()
    assert result.outcome() == ("no_decision", None)
    assert (result.ballots, result.pending, result.electorate) == (2, 3, 5)


def test_supermajority_k_of_n_counts_the_electorate():
    members = [f"m{i}" for i in range(6)]
    session = VotingSession("s", members, "supermajority", supermajority=(2, 3))
    for voter in members[:3]:
        assert session.cast(voter, "x") is None
    assert session.cast(members[3], "x") is not None  # 4 of 6 >= 2/3
    assert session.result is not None and session.result.choice == "x"
    tie = VotingSession("t", members, "supermajority", supermajority=(2, 3))
    for i, voter in enumerate(members):
        tie.cast(voter, "x" if i < 3 else "y")
    assert tie.close().outcome() == ("no_decision", None)


def test_unanimous_fails_at_the_first_dissent():
    session = VotingSession("s", MEMBERS, "unanimous")
    session.cast("a", "x")
    result = session.cast("b", "y")
    assert result is not None and result.outcome() == ("no_decision", None)
    assert result.early and result.pending == 3


def test_weighted_threshold_over_the_electorates_total_weight():
    weights = {"a": 5, "b": 1, "c": 1, "d": 1, "e": 2}  # total 10
    session = VotingSession("s", MEMBERS, "weighted", weights=weights, threshold=0.6)
    assert session.cast("a", "x") is None  # 5/10: not > half
    assert session.cast("b", "x") is not None  # 6/10 >= 0.6 and > half
    assert session.result is not None and session.result.choice == "x"
    assert session.result.tally == (("x", 6.0),)
    strict = VotingSession("t", MEMBERS, "weighted", weights=weights)
    strict.cast("a", "x")
    strict.cast("e", "y")
    strict.cast("b", "y")
    strict.cast("c", "y")
    strict.cast("d", "y")
    assert strict.result is not None and strict.result.outcome() == ("no_decision", None)


def test_quorum_counts_ballots_and_lost_members_end_the_vote_when_it_becomes_impossible():
    session = VotingSession("s", MEMBERS, quorum=4)
    session.cast("a", "x")
    session.cast("b", "x")
    assert session.lose("c") is None  # 2 cast + 2 pending can still reach 4
    result = session.lose("d")
    assert result is not None and result.outcome() == ("no_quorum", None)
    assert (result.abstentions, result.pending, result.early) == (2, 1, True)


def test_handle_interface_reports_fixed_once():
    session = VotingSession("s", ["a", "b", "c"])
    assert session.handle(Cast("a", 1), now=0.0) == []
    effects = session.handle(Cast("b", 1), now=1.0)
    assert effects == [Fixed(session.result)] and session.result is not None
    assert session.handle(Close(), now=2.0) == [Fixed(session.result)]
    with pytest.raises(SessionClosed):
        session.handle(Cast("c", 1), now=3.0)
    with pytest.raises(TypeError):
        session.handle("vote", now=3.0)  # type: ignore[arg-type]
    assert session.handle(Lose("c"), now=3.0) == []


# -- early termination never flips an outcome ----------------------------------------------


def completions(session: VotingSession) -> list[tuple[str, object]]:
    """The final outcome of every completion of the pending ballots."""
    pending = [m for m in session.members if m not in session.ballots]
    seen = list(session.options) or [*session._support, "fresh"]
    choices = [*dict.fromkeys(seen), ABSTAIN]
    outcomes = []
    for combo in itertools.product(choices, repeat=len(pending)):
        copy = clone(session)
        for voter, choice in zip(pending, combo, strict=True):
            copy.ballots[voter] = choice  # bypass settling: we want the full count
            if choice is not ABSTAIN:
                copy._votes += 1
                copy._support[choice] = copy._support.get(choice, 0) + copy.weights[voter]
                copy._count[choice] = copy._count.get(choice, 0) + 1
                copy._first.setdefault(choice, len(copy._first))
        status = copy._final_status()
        outcomes.append((status, copy._winner() if status == "decided" else None))
    return outcomes


def clone(session: VotingSession) -> VotingSession:
    copy = VotingSession.__new__(VotingSession)
    copy.__dict__.update(session.__dict__)
    for name in ("ballots", "_support", "_count", "_first"):
        setattr(copy, name, dict(getattr(session, name)))
    copy.result = None
    return copy


session_setups = st.fixed_dictionaries(
    {
        "n": st.integers(1, 5),
        "rule": st.sampled_from(["majority", "supermajority", "unanimous", "weighted"]),
        "options": st.sampled_from([(), ("x", "y"), ("x", "y", "z")]),
        "quorum": st.integers(0, 4),
        "weights": st.lists(st.integers(0, 4), min_size=5, max_size=5),
        "k": st.integers(1, 3),
    }
)


def build(setup: dict[str, object]) -> VotingSession:
    n = int(setup["n"])  # type: ignore[call-overload]
    members = MEMBERS[:n]
    rule = setup["rule"]
    kwargs: dict[str, object] = {"quorum": min(int(setup["quorum"]), n)}  # type: ignore[call-overload]
    if rule == "supermajority":
        kwargs["supermajority"] = (int(setup["k"]) + 1, 4)  # type: ignore[call-overload]
    if rule == "weighted":
        weights = list(setup["weights"])[:n]  # type: ignore[call-overload]
        if sum(weights) == 0:
            weights[0] = 1
        kwargs["weights"] = dict(zip(members, weights, strict=True))
        kwargs["threshold"] = 0.5 + 0.25 * (int(setup["k"]) - 1) / 2  # type: ignore[call-overload]
    return VotingSession("s", members, rule, options=setup["options"], **kwargs)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(setup=session_setups, data=st.data())
def test_early_result_equals_the_full_result_for_every_completion(setup, data):
    session = build(setup)
    order = data.draw(st.permutations(list(session.members)))
    choices = list(session.options) or ["x", "y", "w"]
    for voter in order:
        fixed = session.fixed()
        if fixed is not None:
            assert set(completions(session)) == {fixed.outcome()}
            return
        outcomes = set(completions(session))
        # and it terminates as soon as the outcome is fixed
        assert len(outcomes) > 1, f"fixed ({outcomes}) but not reported"
        choice = data.draw(st.sampled_from([*choices, ABSTAIN]))
        result = session.cast(voter, choice)
        if result is not None:
            assert result is session.result
    assert session.result is not None or session.close() is not None


@settings(max_examples=200, deadline=None)
@given(setup=session_setups, data=st.data())
def test_result_does_not_depend_on_vote_order(setup, data):
    session = build(setup)
    choices = list(session.options) or ["x", "y"]
    ballots = {m: data.draw(st.sampled_from([*choices, ABSTAIN])) for m in session.members}
    results = set()
    for _ in range(4):
        replay = build(setup)
        for voter in data.draw(st.permutations(list(replay.members))):
            if replay.result is None:
                replay.cast(voter, ballots[voter])
        final = replay.close()
        results.add(final.outcome())
    assert len(results) == 1


class VotingMachine(RuleBasedStateMachine):
    """Random casts, losses and closes: a fixed result never changes, counts add up,
    and the session reports a result exactly when the outcome is fixed."""

    def __init__(self) -> None:
        super().__init__()
        self.session = VotingSession("m", MEMBERS[:4], options=("x", "y"), quorum=2)
        self.first_result: tuple[str, object] | None = None

    @precondition(lambda self: self.session.result is None)
    @rule(voter=st.sampled_from(MEMBERS[:4]), choice=st.sampled_from(["x", "y", ABSTAIN]))
    def cast(self, voter, choice):
        if voter in self.session.ballots:
            with pytest.raises(AlreadyVoted):
                self.session.cast(voter, choice)
        else:
            self.session.cast(voter, choice)

    @precondition(lambda self: self.session.result is None)
    @rule(voter=st.sampled_from(MEMBERS[:4]))
    def lose(self, voter):
        self.session.lose(voter)

    @rule()
    def close(self):
        self.session.close()

    @rule(voter=st.sampled_from(MEMBERS[:4]))
    def cast_when_closed_is_rejected(self, voter):
        if self.session.result is not None:
            with pytest.raises(SessionClosed):
                self.session.cast(voter, "x")

    @invariant()
    def fixed_results_never_change(self):
        result = self.session.result
        if result is None:
            assert len(set(completions(self.session))) > 1
            return
        if self.first_result is None:
            self.first_result = result.outcome()
        assert result.outcome() == self.first_result
        assert result.ballots + result.abstentions + result.pending == result.electorate


TestVotingMachine = VotingMachine.TestCase
TestVotingMachine.settings = settings(max_examples=150, stateful_step_count=12, deadline=None)


# -- Byzantine mode ---------------------------------------------------------------------------


def test_byzantine_mode_needs_n_at_least_3f_plus_1_and_names_both_numbers():
    with pytest.raises(InsufficientParticipants, match=r"6 participants, at least 7") as info:
        VotingSession("b", [f"m{i}" for i in range(6)], byzantine_f=2)
    assert (info.value.have, info.value.need) == (6, 7)
    VotingSession("b", [f"m{i}" for i in range(7)], byzantine_f=2)


def test_byzantine_quorum_is_2f_plus_1_at_3f_plus_1_and_keeps_quorums_intersecting():
    for f in range(6):
        assert byzantine_quorum(3 * f + 1, f) == 2 * f + 1
        for n in range(3 * f + 1, 3 * f + 12):
            q = byzantine_quorum(n, f)
            assert 2 * q - n >= f + 1  # two quorums share an honest member
            assert q <= n - f  # reachable with f members silent


@settings(max_examples=400, deadline=None)
@given(
    f=st.integers(0, 3),
    extra=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
    honest_split=st.integers(0, 100),
)
def test_two_honest_participants_never_decide_differently_with_f_equivocators(
    f, extra, seed, honest_split
):
    rng = random.Random(seed)
    n = 3 * f + 1 + extra
    members = [f"m{i}" for i in range(n)]
    byzantine = set(rng.sample(members, f))
    honest = [m for m in members if m not in byzantine]
    # honest members may prefer different values; each sends the same vote to everyone
    preference = {m: ("x" if rng.randrange(100) < honest_split else "y") for m in honest}
    decisions = []
    for receiver in honest:
        session = VotingSession(f"b@{receiver}", members, byzantine_f=f, options=("x", "y"))
        senders = list(members)
        rng.shuffle(senders)
        # some ballots never arrive before the receiver closes
        arrived = [s for s in senders if rng.random() < 0.85]
        for sender in arrived:
            # an equivocator tells each receiver whatever it likes
            choice = rng.choice(["x", "y"]) if sender in byzantine else preference[sender]
            if session.result is None:
                session.cast(sender, choice)
        result = session.close()
        if result.decided:
            decisions.append(result.choice)
    assert len(set(decisions)) <= 1, decisions


def test_the_simulation_catches_disagreement_when_the_quorum_is_only_2f_plus_1_above_3f_plus_1():
    """n = 5, f = 1: honest votes split 2-2 and the equivocator tells each side what it
    wants. With 2f + 1 = 3 ballots, both sides would decide; the session's quorum (4)
    keeps them from disagreeing."""
    members = ["h1", "h2", "h3", "h4", "byz"]
    preference = {"h1": "x", "h2": "x", "h3": "y", "h4": "y"}

    def decide(receiver: str, lie: str, naive: bool) -> object:
        session = VotingSession(f"at-{receiver}", members, byzantine_f=1, options=("x", "y"))
        if naive:
            session.min_support_ballots = 3  # what "2f + 1" alone would allow
        for sender, choice in [*preference.items(), ("byz", lie)]:
            if session.result is None:
                session.cast(sender, choice)
        return session.close().choice

    assert {decide("h1", "x", naive=True), decide("h3", "y", naive=True)} == {"x", "y"}
    assert {decide("h1", "x", naive=False), decide("h3", "y", naive=False)} == {None}
