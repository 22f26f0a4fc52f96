"""Shared fixtures. Keep this file small.

``autojump_clock``: trio's ``MockClock(autojump_threshold=0)``. pytest-trio runs a
test under any clock returned by a fixture the test requests, so a test that
takes ``autojump_clock`` runs in virtual time: sleeps and timeouts complete at
once, as soon as every task is blocked.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)
