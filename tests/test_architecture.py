"""The dependency rule of ARCHITECTURE.md, checked over the package's own imports (a plain AST walk).

A module may import its own package, the foundation (the top-level modules below), and what `ALLOWED`
names for its package. `app`, `cli`, `error_handlers` and `__main__` wire everything and may import
anything. A new import across packages that the rule does not allow fails here: change the rule in
ARCHITECTURE.md and here together, or move the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sync_service"

FOUNDATION = frozenset(
    {"sync_service", "sync_service.config", "sync_service.errors", "sync_service.sql",
     "sync_service.database", "sync_service.batching", "sync_service.http_protocol"}
)  # fmt: skip
WIRING = frozenset(
    {
        "sync_service.app",
        "sync_service.cli",
        "sync_service.error_handlers",
        "sync_service.services",
        "sync_service.__main__",
    }
)

# package -> what it may import besides itself and the foundation (a package, or one module of one).
ALLOWED: dict[str, frozenset[str]] = {
    "foundation": frozenset(),
    "ingest": frozenset(),
    "webhooks": frozenset({"sync_service.ingest"}),
    "users": frozenset({"sync_service.ops.metrics"}),
    "replay": frozenset({"sync_service.ingest", "sync_service.webhooks", "sync_service.ops.migrations"}),
    "backfill": frozenset(
        {"sync_service.ingest", "sync_service.webhooks", "sync_service.replay", "sync_service.ops.migrations"}
    ),
    "ops": frozenset({"sync_service.ingest.records", "sync_service.webhooks.signatures"}),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "wiring" if module in WIRING else "foundation"


def _imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from sync_service.ops import metrics` imports the module sync_service.ops.metrics.
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                as_path = PACKAGE.parent / Path(*candidate.split("."))
                found.add(candidate if as_path.with_suffix(".py").is_file() or as_path.is_dir() else base)
    return {name for name in found if name == "sync_service" or name.startswith("sync_service.")}


def _allowed(importer_unit: str, imported: str) -> bool:
    if importer_unit == "wiring" or imported in FOUNDATION:
        return True
    if _unit(imported) == importer_unit:
        return True
    return any(imported == rule or imported.startswith(rule + ".") for rule in ALLOWED[importer_unit])


def test_every_import_keeps_the_dependency_rule() -> None:
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        unit = _unit(module)
        for imported in sorted(_imports(path, module)):
            if not _allowed(unit, imported):
                broken.append(f"{module} ({unit}) imports {imported}")
    assert broken == [], "imports that break ARCHITECTURE.md's rule:\n" + "\n".join(broken)


def test_the_rule_catches_an_upward_import() -> None:
    # The check itself must be able to fail: ingest may not reach up into webhooks or the app.
    assert not _allowed("ingest", "sync_service.webhooks.events")
    assert not _allowed("users", "sync_service.ingest.core")
    assert not _allowed("foundation", "sync_service.ops.metrics")
    assert _allowed("webhooks", "sync_service.ingest.records")
    assert _allowed("wiring", "sync_service.replay.command")


def test_every_subpackage_says_what_it_owns_and_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(PACKAGE.parent)} does not say what it may import"


def test_every_module_logs_under_its_own_name() -> None:
    # ops/logs.py's rule: `getLogger(__name__)`, except the access log's fixed name. A literal name
    # elsewhere would give operators a `logger` field that names no module.
    named = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute)
                and node.value.func.attr == "getLogger"
                and any(isinstance(t, ast.Name) and t.id == "log" for t in node.targets)
            ):
                argument = ast.unparse(node.value.args[0]) if node.value.args else ""
                if argument not in ("__name__", "ACCESS_LOGGER"):
                    named.append(f"{path.relative_to(PACKAGE.parent)}: getLogger({argument})")
    assert named == []
