"""The sans-IO cores import no trio and nothing of the package outside protocols."""

from __future__ import annotations

import ast
from pathlib import Path

import foundation_trio.protocols

PROTOCOLS_DIR = Path(foundation_trio.protocols.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


def test_every_protocol_module_is_pure() -> None:
    modules = sorted(PROTOCOLS_DIR.glob("*.py"))
    assert {m.name for m in modules} >= {
        "hyparview.py",
        "plumtree.py",
        "phi.py",
        "fullmesh.py",
        "client_server.py",
        "common.py",
    }
    for module in modules:
        for name in imported_modules(module):
            root = name.split(".")[0]
            assert root not in {"trio", "anyio", "asyncio", "socket"}, (module.name, name)
            if root == "foundation_trio":
                assert name.startswith("foundation_trio.protocols"), (module.name, name)


def test_protocol_errors_are_foundation_errors() -> None:
    import foundation_trio as ft
    from foundation_trio.protocols.coordination import CoordinationError, InvalidBid

    assert issubclass(CoordinationError, ft.FoundationError)
    assert issubclass(InvalidBid, ft.FoundationError)
