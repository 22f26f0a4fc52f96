"""Where the request context lives, so that the runtime can carry it.

The public API is ``foundation_trio.services.context`` (``ft.context``). The
variable is defined down here because the runtime carries it with GenServer
calls and casts, and the runtime imports nothing above itself. It always holds
an immutable mapping; :data:`EMPTY` outside any binding.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Final

EMPTY: Final[Mapping[str, object]] = MappingProxyType({})
"""The context outside any binding. Compared by identity on hot paths."""

request_context: Final[ContextVar[Mapping[str, object]]] = ContextVar(
    "foundation_trio.context", default=EMPTY
)
"""The calling task's request context (an immutable mapping)."""
