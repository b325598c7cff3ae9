"""The service's wings import one way (service/__init__.py draws the map), encoder/ never imports service/,
and no two modules import each other in a circle. Read from the source (every import, function-local ones
too), so a violation fails here before it can hide behind import order."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE = {"config", "records", "daemon_vocabulary", "logs", "periodic", "state_files", "disk_space", "rpc"}
#: wing -> the wings it may import (base modules are open to every wing; a wing may import itself).
ALLOWED = {
    "base": set(),
    "capture": {"base"},
    "analysis": {"capture", "base"},
    "store": {"analysis", "base"},
    "metrics": {"analysis", "base"},
    "announce": {"store", "analysis", "base"},
    "api": {"metrics", "store", "analysis", "capture", "base"},
    "web": {"store", "analysis", "capture", "base"},
    "pipeline": {"metrics", "analysis", "capture", "base"},
    "daemon": {"pipeline", "web", "api", "announce", "metrics", "store", "analysis", "capture", "base"},
    "cli": {"daemon", "pipeline", "web", "api", "announce", "metrics", "store", "analysis", "capture", "base"},
}


def module_name(path: Path) -> str:
    """Dotted module name of a source file under the repository."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports (``from a import b`` counts ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def wing_of(module: str) -> str:
    """The wing a service module belongs to (base modules are "base")."""
    part = module.split(".")[1] if "." in module else ""
    return "base" if part in BASE or part == "" else part


def source_files(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "rpc" not in p.relative_to(REPO).parts)


def test_every_service_module_lives_in_a_known_wing():
    assert {wing_of(module_name(p)) for p in source_files("service")} <= set(ALLOWED)


def test_service_wings_import_only_the_wings_below_them():
    wrong = []
    for path in source_files("service"):
        source = module_name(path)
        for target in imported_modules(path):
            if not target.startswith("service."):
                continue
            a, b = wing_of(source), wing_of(target)
            if a != b and b not in ALLOWED[a]:
                wrong.append(f"{source} ({a}) imports {target} ({b})")
    assert not wrong, "imports against the wing order (service/__init__.py):\n" + "\n".join(sorted(set(wrong)))


def test_encoder_never_imports_service():
    wrong = [f"{module_name(p)} imports {t}" for p in source_files("encoder") for t in imported_modules(p)
             if t == "service" or t.startswith("service.")]
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_import_each_other_in_a_circle():
    modules = {module_name(p): p for p in source_files("service") + source_files("encoder")}
    graph = {name: {t for t in imported_modules(p) if t in modules and t != name} for name, p in modules.items()}
    circles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def module_map_paths() -> set[str]:
    """Every backticked path in a table row of docs/daemon.md's "Module map" section."""
    text = (REPO / "docs" / "daemon.md").read_text()
    section = text.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {path for row in rows for path in re.findall(r"`([^`]+)`", row)}


def test_the_module_map_has_a_row_for_every_module_and_none_for_a_module_that_is_gone():
    modules = {str(p.relative_to(REPO)) for package in ("service", "encoder") for p in source_files(package)
               if p.name != "__init__.py"}
    mapped = module_map_paths()
    assert sorted(modules - mapped) == [], "modules with no row in docs/daemon.md's module map"
    assert sorted(p for p in mapped if not (REPO / p).exists()) == [], "rows for files that do not exist"


def test_no_two_modules_share_a_name():
    """Every module name is unique across service/ and encoder/, so a name says which file it is; service/cli/
    modules are named for their subcommand (cli/train_command.py faces encoder/train.py)."""
    seen: dict[str, list[str]] = {}
    for package in ("service", "encoder"):
        for path in source_files(package):
            if path.name != "__init__.py":
                seen.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_one_spelling_of_analyse():
    """British analyse/Analyser everywhere (code, benches, tests, docs); SQL's ANALYZE and systemd-analyze are
    other tools' names."""
    files = [p for folder in ("service", "encoder", "bench", "tests", "docs") for p in (REPO / folder).rglob("*")
             if p.suffix in (".py", ".md", ".js", ".html") and "rpc" not in p.parts] + [REPO / "README.md"]
    american = re.compile("(?<!systemd.)[Aa]naly" + "z")  # split, so this line does not match itself
    wrong = [f"{p.relative_to(REPO)}:{n}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
             if american.search(line)]
    assert wrong == [], "the American spelling (say analyse, Analyser)"
