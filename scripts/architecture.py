"""Print the module list of docs/architecture.md from the package tree (each module's first
docstring line): `python scripts/architecture.py > /tmp/modules.md`, then paste it in."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "harken"


def module_lines() -> list[str]:
    lines = []
    for path in sorted(PACKAGE.rglob("*.py"), key=lambda p: (len(p.relative_to(PACKAGE).parts), str(p))):
        if path.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        lines.append(f"{str(path.relative_to(PACKAGE)):30s} {first}")
    return lines


if __name__ == "__main__":
    print("\n".join(module_lines()))
