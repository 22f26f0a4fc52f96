"""The root of the package's exceptions, in a leaf module every layer may import.

The sans-IO protocol cores may import nothing of the package but plain helpers;
keeping the base class here lets their errors be :class:`FoundationError` too, so
``except foundation_trio.FoundationError`` catches every error raised on purpose.
"""

from __future__ import annotations


class FoundationError(Exception):
    """Base class of every error foundation_trio raises on purpose."""


__all__ = ["FoundationError"]
