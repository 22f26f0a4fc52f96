"""Import rules between the package's layers (DESIGN.md section 2, "Dependencies
point downward only"), checked statically with ``ast`` over every module.

The rules are data (``ALLOWED`` and ``FORBIDDEN_THIRD_PARTY``): one test case per
layer, failing with every offending ``module:line``. Imports inside functions and
under ``TYPE_CHECKING`` count too: a layer must not even name a higher one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import foundation_trio

PACKAGE = "foundation_trio"
ROOT = Path(foundation_trio.__file__).resolve().parent

# A "layer" is a direct child of the package: a subpackage (``runtime``) or a
# top-level module (``_validation``, ``cli``). ``__init__`` is the package's own
# __init__.py, i.e. ``import foundation_trio`` / ``from foundation_trio import x``.
EVERYTHING = frozenset(
    {
        "__init__",
        "_validation",
        "_errors",
        "_boot",
        "runtime",
        "services",
        "society",
        "protocols",
        "cluster",
        "distributed",
        "agents",
        "sim",
        "cli",
        "__main__",
    }
)

ALLOWED: dict[str, frozenset[str]] = {
    # the curated public API re-exports the library; it never imports the CLI
    "__init__": EVERYTHING - {"cli", "__main__"},
    # the entry points sit on top of everything
    "cli": EVERYTHING,
    "__main__": EVERYTHING,
    # strict option structuring, shared by every layer; raises runtime's ConfigError
    "_validation": frozenset({"_validation", "runtime"}),
    # sans-IO cores: nothing of the package but themselves
    "protocols": frozenset({"protocols"}),
    # the deterministic simulator drives the sans-IO cores, nothing else
    "sim": frozenset({"sim", "protocols"}),
    # the local OTP core
    "runtime": frozenset({"runtime", "_validation", "protocols"}),
    "services": frozenset({"services", "runtime", "protocols", "_validation"}),
    "society": frozenset({"society", "services", "runtime", "protocols", "_validation"}),
    # "cluster uses runtime and protocols", and the services below it: links count
    # handshake failures in telemetry and envelopes carry the request context
    "cluster": frozenset({"cluster", "services", "runtime", "protocols", "_validation"}),
    # the public open_node: the runtime's node with the services and the cluster booted
    "_boot": frozenset({"_boot", "cluster", "services", "runtime", "protocols", "_validation"}),
    # "agents and distributed may use cluster, runtime, services and protocols"
    "distributed": frozenset(
        {"distributed", "cluster", "services", "runtime", "protocols", "_validation"}
    ),
    "agents": frozenset(
        {
            "agents",
            "distributed",
            "society",
            "cluster",
            "services",
            "runtime",
            "protocols",
            "_validation",
        }
    ),
}

# ``FoundationError`` lives in a leaf module that every layer may import, so that
# the protocol cores' errors derive from it too.
ALLOWED = {layer: allowed | {"_errors"} for layer, allowed in ALLOWED.items()}
ALLOWED["_errors"] = frozenset({"_errors"})

# Third-party / stdlib modules a layer must not import (sans-IO: no event loop, no I/O).
NO_IO = frozenset(
    {"trio", "anyio", "trio_websocket", "zeroconf", "asyncio", "socket", "selectors", "ssl"}
)
FORBIDDEN_THIRD_PARTY: dict[str, frozenset[str]] = {
    "protocols": NO_IO,
    "sim": NO_IO,
    # the local core needs trio, but not the networking stacks of later layers
    "runtime": frozenset({"anyio", "trio_websocket", "zeroconf"}),
    "services": frozenset({"trio_websocket", "zeroconf"}),
    "_validation": frozenset({"trio", "anyio", "trio_websocket", "zeroconf"}),
}


# -- reading the package -----------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The layer of a module of the package: ``foundation_trio.runtime.node`` ->
    ``runtime``; the package itself -> ``__init__``."""
    parts = module.split(".")
    assert parts[0] == PACKAGE
    return parts[1] if len(parts) > 1 else "__init__"


def package_modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def is_submodule(dotted: str) -> bool:
    """Whether ``dotted`` (inside the package) is a module or subpackage on disk."""
    parts = dotted.split(".")[1:]
    base = ROOT.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """Resolve ``from <level dots><target> import ...`` in ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 >= len(parts):
        raise ValueError(f"relative import beyond the top level in {module}")
    base = parts[: len(parts) - (level - 1)]
    if target:
        base.append(target)
    return ".".join(base)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports, absolute, with the line number.

    ``from pkg import name`` yields ``pkg.name`` when that is a submodule of the
    package (``from foundation_trio import runtime``), else ``pkg``.
    """
    module = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = resolve_relative(module, is_package, node.level, node.module)
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.append((candidate if is_submodule(candidate) else base, node.lineno))
            else:
                found.append((base, node.lineno))
    return sorted(found, key=lambda item: item[1])


def violations(layer: str) -> tuple[int, list[str]]:
    """(modules checked, offending "file:line imports X" lines) for ``layer``."""
    allowed = ALLOWED[layer]
    forbidden = FORBIDDEN_THIRD_PARTY.get(layer, frozenset())
    checked = 0
    problems: list[str] = []
    for path in package_modules():
        module = module_name(path)
        if layer_of(module) != layer:
            continue
        checked += 1
        where = path.relative_to(ROOT.parent)
        for imported, line in imports_of(path):
            top = imported.split(".")[0]
            if top == PACKAGE:
                target = layer_of(imported)
                if target not in allowed:
                    problems.append(
                        f"{where}:{line} imports {imported} (layer {target!r}; "
                        f"{layer!r} may use only {sorted(allowed)})"
                    )
            elif top in forbidden:
                problems.append(f"{where}:{line} imports {imported} (forbidden in {layer!r})")
    return checked, problems


# -- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_downward_only(layer):
    _, problems = violations(layer)
    assert not problems, f"layer {layer!r} breaks the import rules:\n" + "\n".join(problems)


def test_every_layer_on_disk_is_in_the_table():
    on_disk = {layer_of(module_name(p)) for p in package_modules()}
    unknown = on_disk - set(ALLOWED)
    assert not unknown, (
        f"new layer(s) {sorted(unknown)}: add them to ALLOWED in tests/test_layers.py "
        "following DESIGN.md section 2"
    )
    assert set(ALLOWED) <= EVERYTHING


def test_the_layers_that_exist_are_checked():
    """Guard against a checker that silently checks nothing."""
    for layer in ("runtime", "protocols", "sim", "__init__", "_validation"):
        checked, _ = violations(layer)
        assert checked > 0, f"no module of layer {layer!r} was found under {ROOT}"


# -- the checker itself -----------------------------------------------------------------


def test_relative_imports_resolve_against_the_modules_package():
    assert (
        resolve_relative("foundation_trio.runtime.node", False, 1, "errors")
        == "foundation_trio.runtime.errors"
    )
    assert resolve_relative("foundation_trio.runtime.node", False, 2, "sim") == (
        "foundation_trio.sim"
    )
    assert resolve_relative("foundation_trio.runtime", True, 1, "pid") == (
        "foundation_trio.runtime.pid"
    )
    assert resolve_relative("foundation_trio.runtime", True, 2, None) == "foundation_trio"
    assert resolve_relative("foundation_trio", True, 1, "runtime") == "foundation_trio.runtime"
    with pytest.raises(ValueError, match="beyond the top level"):
        resolve_relative("foundation_trio.runtime.node", False, 4, None)


def test_checker_catches_bad_imports(tmp_path, monkeypatch):
    """A fake package with one offence of each kind is reported module:line."""
    pkg = tmp_path / PACKAGE
    for sub in ("protocols", "runtime", "sim", "cluster"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "protocols" / "bad.py").write_text(
        "import attrs\n"
        "import trio\n"
        "from ..sim import simulator\n"
        "from .. import runtime\n"
        "def f():\n"
        "    from anyio import sleep\n"
    )
    (pkg / "protocols" / "good.py").write_text("from .bad import x\nfrom . import bad\n")
    (pkg / "sim" / "simulator.py").write_text("from ..protocols import good\n")
    (pkg / "runtime" / "node.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from foundation_trio.cluster import links\n"
        "from foundation_trio import Pid\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", pkg)

    checked, problems = violations("protocols")
    assert checked == 3
    assert [p.split(" ")[0] for p in problems] == [
        "foundation_trio/protocols/bad.py:2",
        "foundation_trio/protocols/bad.py:3",
        "foundation_trio/protocols/bad.py:4",
        "foundation_trio/protocols/bad.py:6",
    ]
    assert "foundation_trio.sim" in problems[1]
    assert "foundation_trio.runtime" in problems[2]

    assert violations("sim") == (2, [])

    _, problems = violations("runtime")
    assert [p.split(" ")[0] for p in problems] == [
        "foundation_trio/runtime/node.py:3",
        "foundation_trio/runtime/node.py:4",
    ]
    assert "layer '__init__'" in problems[1]


# -- the public package ---------------------------------------------------------------


def test_importing_the_package_pulls_in_no_optional_stacks():
    code = (
        "import sys, json, foundation_trio\n"
        "print(json.dumps(sorted(m for m in ('trio_websocket', 'zeroconf', 'anyio')"
        " if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_all_names_exist_and_are_unique():
    names = foundation_trio.__all__
    missing = [n for n in names if not hasattr(foundation_trio, n)]
    assert not missing, f"foundation_trio.__all__ names that do not exist: {missing}"
    assert len(names) == len(set(names))
    # everything the README's example uses is there
    for name in ("open_node", "GenServer", "ChildSpec", "call", "cast", "ONE_FOR_ONE"):
        assert name in names
