"""Structured errors: fields, validation, raising, wrapping, retryability, context."""

from __future__ import annotations

import math

import pytest
import trio

import foundation_trio as ft
from foundation_trio.services.errors import Category, Error, Severity


def test_an_error_is_a_record_and_an_exception():
    error = Error(
        code="payment.card_declined",
        message="card declined",
        category=Category.EXTERNAL,
        severity="high",
        details={"card": "visa"},
        retry_after=2,
    )
    assert isinstance(error, ft.FoundationError)
    assert str(error) == "[payment.card_declined] card declined"
    assert error.severity is Severity.HIGH
    assert error.retryable is False  # external: not by default
    assert error.retry_after == 2
    with pytest.raises(Error) as info:
        raise error
    assert info.value is error
    assert info.value.details == {"card": "visa"}


@pytest.mark.parametrize(
    ("category", "retryable"),
    [
        ("timeout", True),
        ("unavailable", True),
        ("rate_limited", True),
        ("validation", False),
        ("not_found", False),
        ("conflict", False),
        ("permission", False),
        ("external", False),
        ("internal", False),
    ],
)
def test_retryable_defaults_by_category_and_can_be_overridden(category, retryable):
    assert Error(code="x", message="m", category=category).retryable is retryable
    forced = Error(code="x", message="m", category=category, retryable=not retryable)
    assert forced.retryable is (not retryable)
    assert ft.errors.is_retryable(forced) is (not retryable)


def test_the_context_and_correlation_id_are_captured_at_creation():
    with ft.context.bind(request_id="r1", user_id=7):
        error = Error(code="x", message="m")
    assert error.context == {"request_id": "r1", "user_id": 7}
    assert error.correlation_id == "r1"
    with ft.context.bind(request_id="r1", correlation_id="c9"):
        assert Error(code="x", message="m").correlation_id == "c9"
        assert Error(code="x", message="m", correlation_id="own").correlation_id == "own"
    plain = Error(code="x", message="m")
    assert plain.context == {} and plain.correlation_id is None


async def test_the_context_is_that_of_the_task_creating_it_inside_a_node():
    async with ft.open_node("t"):

        async def failing():
            raise Error(code="job.failed", message="no")

        with ft.context.bind(request_id="r5"):
            with pytest.raises(Error) as info:
                await failing()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.lowlevel.checkpoint)
        assert info.value.context == {"request_id": "r5"}


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"code": "", "message": "m"}, ValueError, "code"),
        ({"code": "Bad Code", "message": "m"}, ValueError, "code"),
        ({"code": 3, "message": "m"}, ValueError, "code"),
        ({"code": "x", "message": None}, TypeError, "message"),
        ({"code": "x", "message": "m", "category": "nope"}, ValueError, "category"),
        ({"code": "x", "message": "m", "severity": 3}, ValueError, "severity"),
        ({"code": "x", "message": "m", "details": ["a"]}, TypeError, "details"),
        ({"code": "x", "message": "m", "details": {1: "a"}}, TypeError, "details"),
        ({"code": "x", "message": "m", "retryable": "yes"}, TypeError, "retryable"),
        ({"code": "x", "message": "m", "retry_after": -1}, ValueError, "retry_after"),
        ({"code": "x", "message": "m", "retry_after": math.inf}, ValueError, "retry_after"),
        ({"code": "x", "message": "m", "retry_after": "1"}, TypeError, "retry_after"),
        ({"code": "x", "message": "m", "correlation_id": 5}, TypeError, "correlation_id"),
        ({"code": "x", "message": "m", "context": {"k": [1]}}, TypeError, "'k'"),
        ({"code": "x"}, TypeError, "message"),
    ],
)
def test_bad_fields_are_refused_naming_them(fields, error, match):
    with pytest.raises(error, match=match):
        Error(**fields)


def test_wrap_keeps_the_cause_and_guesses_the_category():
    cause = ft.CallTimeout("server", 5.0)
    with ft.context.bind(request_id="r2"):
        error = ft.errors.wrap(cause, code="billing.call_failed", details={"attempt": 1})
    assert error.__cause__ is cause
    assert error.category is Category.TIMEOUT and error.retryable is True
    assert error.message == str(cause)
    assert error.details == {"exception": "CallTimeout", "attempt": 1}
    assert error.correlation_id == "r2"

    cases = {
        ConnectionResetError(): Category.UNAVAILABLE,
        ft.NoProcess("x"): Category.NOT_FOUND,
        KeyError("k"): Category.NOT_FOUND,
        PermissionError("p"): Category.PERMISSION,
        ValueError("v"): Category.VALIDATION,
        RuntimeError("r"): Category.INTERNAL,
        trio.TooSlowError(): Category.TIMEOUT,
    }
    for exc, category in cases.items():
        assert ft.errors.wrap(exc, code="x").category is category, exc
    assert ft.errors.wrap(RuntimeError(), code="x").message == "RuntimeError"
    inner = Error(code="a", message="m", category="rate_limited")
    outer = ft.errors.wrap(inner, code="b", message="outer", severity="critical")
    assert outer.category is Category.RATE_LIMITED and outer.__cause__ is inner
    assert outer.severity is Severity.CRITICAL
    forced = ft.errors.wrap(ValueError("v"), code="x", retryable=True, retry_after=0.5)
    assert forced.retryable is True and forced.retry_after == 0.5


def test_wrap_refuses_what_is_not_an_exception():
    with pytest.raises(TypeError, match="exc"):
        ft.errors.wrap("boom", code="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="code"):
        ft.errors.wrap(ValueError(), code="Not A Code")


def test_is_retryable_for_plain_exceptions():
    assert ft.errors.is_retryable(TimeoutError())
    assert ft.errors.is_retryable(ft.CallTimeout("s", 1.0))
    assert ft.errors.is_retryable(ConnectionRefusedError())
    assert ft.errors.is_retryable(trio.TooSlowError())
    assert ft.errors.is_retryable(ft.MailboxFull(ft.Pid("n", 1), 3))
    assert not ft.errors.is_retryable(ValueError())
    assert not ft.errors.is_retryable(ft.NoProcess("x"))
    with pytest.raises(TypeError, match="exc"):
        ft.errors.is_retryable(None)  # type: ignore[arg-type]


def test_to_dict_and_back():
    with ft.context.bind(request_id="r3", n=1.5, ok=True, none=None):
        error = Error(
            code="a.b", message="m", category="conflict", details={"x": [1, 2]}, retry_after=3
        )
    data = error.to_dict()
    assert data == {
        "code": "a.b",
        "message": "m",
        "category": "conflict",
        "severity": "medium",
        "details": {"x": [1, 2]},
        "context": {"request_id": "r3", "n": 1.5, "ok": True, "none": None},
        "correlation_id": "r3",
        "retryable": False,
        "retry_after": 3,
    }
    back = Error.from_dict(data)
    assert back.to_dict() == data
    with pytest.raises(ValueError, match="unknown keys"):
        Error.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match="'code' is missing"):
        Error.from_dict({"message": "m"})
    with pytest.raises(TypeError, match="mapping"):
        Error.from_dict([("code", "x")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="context"):
        Error.from_dict({**data, "context": "r3"})
