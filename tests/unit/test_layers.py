"""The import layers, read from the source with ``ast``: layers only point down.

* No import cycle among the modules of ``uq_guard/`` and ``integrations/``.
* ``uq_guard/`` imports no integration package, except in its top layer
  (the ``guard()`` facade, the CLI and the evaluation backends), and there
  only inside functions, so that ``import uq_guard`` needs no extra.
* ``uq_guard/`` imports no framework (LangChain, openai, FastAPI...).
* The guard's run-time modules import nothing from ``uq_guard/evaluation/``.

An import of ``a.b`` depends on the module ``a.b``, not on package ``a``'s
``__init__`` (as import-linter counts). Imports are module-level, inside a
function (lazy), under ``if TYPE_CHECKING:`` (types only: never counted), or
dynamic (a module's full name as a string constant in a module that calls
``importlib.import_module``). Relative imports are resolved.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = frozenset(
    p.name for p in (ROOT / "integrations").iterdir() if (p / "__init__.py").is_file()
)
#: The top layer of ``uq_guard/``: it may import integrations, inside functions only.
#: The evaluation backends are here for ``make_backend``, which turns "local", an
#: OpenAI URL or a LangChain model into a Backend.
TOP_LAYER = frozenset({"uq_guard._guard", "uq_guard.cli", "uq_guard.evaluation.backends"})
FRAMEWORKS = frozenset(
    {
        "langchain",
        "langchain_core",
        "langchain_community",
        "openai",
        "fastapi",
        "starlette",
        "uvicorn",
        "transformers",
    }
)

#: Imports that break a rule and are being moved in other modules' work (issue 12).
#: Each is left out of the check it names; every other import is checked.
PENDING: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen from ``source``."""

    source: str
    target: str
    kind: str  # "module", "lazy", "dynamic" or "types"
    line: int


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    packages = [ROOT / "uq_guard", *(ROOT / "integrations" / name for name in INTEGRATIONS)]
    for package in packages:
        for path in package.rglob("*.py"):
            parts = list(path.relative_to(package.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _known(name: str) -> str | None:
    """The module ``name`` refers to (``a.b.C``, a class, counts as module ``a.b``), if ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The full names an import statement refers to (relative imports resolved)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package.pop()
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([node.module] if node.module else [])])
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports_of(module: str) -> list[Import]:
    source = MODULES[module].read_text(encoding="utf-8")
    tree = ast.parse(source)
    dynamic = "import_module" in source  # module names in strings are imported by name
    found: list[Import] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            child_kind = kind
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                child_kind = "lazy" if kind == "module" else kind
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for inner in child.body:
                    visit_one(inner, "types")
                for inner in child.orelse:
                    visit_one(inner, kind)
                continue
            visit_one(child, child_kind)

    def visit_one(child: ast.AST, kind: str) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.extend(Import(module, t, kind, child.lineno) for t in _targets(module, child))
        elif (
            dynamic
            and isinstance(child, ast.Constant)
            and isinstance(child.value, str)
            and child.value in MODULES
            and child.value != module
        ):
            found.append(Import(module, child.value, "dynamic", child.lineno))
        visit(child, kind)

    visit(tree, "module")
    return found


IMPORTS = [imp for module in sorted(MODULES) for imp in _imports_of(module)]


def _pending(imp: Import, rule: str) -> bool:
    target = _known(imp.target)
    return any(
        (imp.source == source or imp.source.startswith(source + ".")) and target == pending
        for (source, pending), rules in PENDING.items()
        if rule in rules
    )


def _cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for source, target in edges:
        if source != target:
            graph[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(MODULES)))
    try:
        for node in sorted(graph):
            if node not in index:
                strong(node)
    finally:
        sys.setrecursionlimit(limit)
    return components


def _edges(kinds: set[str], rule: str) -> list[tuple[str, str]]:
    return [
        (imp.source, target)
        for imp in IMPORTS
        if imp.kind in kinds
        and (target := _known(imp.target)) is not None
        and not _pending(imp, rule)
    ]


def test_the_parser_sees_the_imports_it_checks():
    # the checks below are only as good as this: known imports must be found, by kind
    seen = {(i.source, _known(i.target), i.kind) for i in IMPORTS}
    assert ("uq_guard.engine", "uq_guard.config", "module") in seen
    assert ("uq_guard._guard", "uq_guard_langchain", "lazy") in seen
    assert ("uq_guard_langchain.chat_model", "uq_guard.engine", "module") in seen
    assert ("uq_guard._exceptions", "uq_guard.report", "types") in seen
    assert len(MODULES) > 40 and {"uq_guard_langchain", "uq_guard_server"} <= INTEGRATIONS


def test_no_import_cycle_at_import_time():
    assert _cycles(_edges({"module"}, "cycle")) == []


def test_no_import_cycle_counting_lazy_and_dynamic_imports():
    assert _cycles(_edges({"module", "lazy", "dynamic"}, "cycle")) == []


def test_the_engine_imports_no_integration_outside_its_top_layer():
    wrong = [
        imp
        for imp in IMPORTS
        if imp.source.split(".")[0] == "uq_guard"
        and imp.target.split(".")[0] in INTEGRATIONS
        and imp.kind != "types"
        and not (imp.source in TOP_LAYER and imp.kind == "lazy")
    ]
    assert wrong == []


def test_the_engine_imports_no_framework():
    wrong = [
        imp
        for imp in IMPORTS
        if imp.source.split(".")[0] == "uq_guard" and imp.target.split(".")[0] in FRAMEWORKS
    ]
    assert wrong == []


def test_the_guards_run_time_modules_import_nothing_from_evaluation():
    wrong = [
        imp
        for imp in IMPORTS
        if imp.source.split(".")[0] == "uq_guard"
        and not imp.source.startswith("uq_guard.evaluation")
        and imp.source not in TOP_LAYER
        and (_known(imp.target) or "").startswith("uq_guard.evaluation")
        and imp.kind != "types"
        and not _pending(imp, "run-time")
    ]
    assert wrong == []
