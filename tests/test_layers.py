"""The layers import one way: domain → connectors / enrichers → triage (the flow) → triggers.

Every module of ours is parsed (imports inside functions and under TYPE_CHECKING count too) and
each import of one of our packages must point to the same layer or a lower one. Connectors and
enrichers share a layer but never import each other: platform I/O and pure enrichment stay apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Lower number = lower layer. A module may import its own layer and the layers below.
LAYERS = {
    "domain": 0,
    "connectors": 1,
    "enrichers": 1,
    "triage": 2,
    "triggers": 3,
    "function_app": 4,
}
#: Same-rank packages that must not import each other.
APART = {("connectors", "enrichers"), ("enrichers", "connectors")}


def _modules() -> list[Path]:
    files = [ROOT / "function_app.py"]
    for package in ("domain", "connectors", "enrichers", "triage", "triggers"):
        files.extend(sorted((ROOT / package).rglob("*.py")))
    return files


def _ours(node: ast.AST) -> list[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
    return [n.split(".")[0] for n in names if n.split(".")[0] in LAYERS]


def _violations(source: str, package: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        for target in _ours(node):
            if LAYERS[target] > LAYERS[package] or (package, target) in APART:
                found.append(f"{name}:{getattr(node, 'lineno', 0)} ({package}) imports {target}")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0].removesuffix(".py")
    name = str(path.relative_to(ROOT))
    assert _violations(path.read_text(encoding="utf-8"), package, name) == []


@pytest.mark.parametrize(
    ("package", "source", "target"),
    [
        ("domain", "def f():\n    from triage.pipeline import Pipeline\n", "triage"),
        ("domain", "import connectors.queue\n", "connectors"),
        ("connectors", "from enrichers.text import clean_email_text\n", "enrichers"),
        ("enrichers", "from connectors.base import SourceRecord\n", "connectors"),
        ("triage", "import function_app\n", "function_app"),
    ],
)
def test_the_check_sees_a_wrong_way_import(package: str, source: str, target: str) -> None:
    # The checker itself must catch what it is there for, imports inside functions included.
    [found] = _violations(source, package, "probe.py")
    assert found.endswith(f"({package}) imports {target}")


def test_the_ground_and_the_flow_may_be_imported_from_above() -> None:
    assert _violations("from domain.models import Ticket\n", "connectors", "ok.py") == []
    assert _violations("from connectors.base import Connector\n", "triage", "ok.py") == []
