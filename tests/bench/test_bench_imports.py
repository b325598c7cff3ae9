"""Every bench runs as ``python -m bench.NAME`` from the repository root: no bench touches sys.path,
each imports its siblings as ``bench.NAME`` and the suite's helpers as ``tests.<folder>.NAME``, and the
docs show the benches' commands in that form."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted((REPO / "bench").glob("*.py"))
# Modules that resolve only when their own folder is on sys.path: bench/NAME.py and the tests' helpers.
FOLDER_LOCAL = {p.stem for p in BENCHES} | {p.stem for p in (REPO / "tests").rglob("*.py")}


def imported_modules(path: Path) -> list[str]:
    """Every absolute module name ``path`` imports, function-local imports included."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_bench_touches_sys_path():
    touching = [p.name for p in BENCHES if re.search(r"\bsys\.path\b", p.read_text())]
    assert touching == []


def test_benches_import_their_siblings_and_the_test_helpers_by_package():
    bare = [f"{p.name}: import {name}" for p in BENCHES for name in imported_modules(p)
            if name.split(".")[0] in FOLDER_LOCAL]
    assert bare == []


def test_every_package_import_in_a_bench_names_a_file_that_exists():
    missing = [f"{p.name}: {name}" for p in BENCHES for name in imported_modules(p)
               if name.split(".")[0] in ("bench", "tests")
               and not (REPO / (name.replace(".", "/") + ".py")).is_file()
               and not (REPO / name.replace(".", "/")).is_dir()]
    assert missing == []


def test_the_docs_run_benches_as_modules():
    texts = [p for p in [REPO / "README.md", *(REPO / "docs").glob("*.md"), *BENCHES] if p.is_file()]
    as_scripts = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in texts
                  for m in re.finditer(r"python[0-9.]*\s+(?:-u\s+)?bench/\w+\.py", p.read_text())]
    assert as_scripts == []
