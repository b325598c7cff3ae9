"""Writing a bench's measured tables into a doc between its `<!-- name:start -->` / `<!-- name:end -->`
markers (the `--write-docs` option of the benches)."""

from __future__ import annotations

from pathlib import Path


def write_marked_section(doc: Path, name: str, text: str) -> None:
    """Replace what stands between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``doc`` with ``text``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = doc.read_text()
    head, rest = content.split(start, 1)
    doc.write_text(head + start + "\n" + text + end + rest.split(end, 1)[1])
