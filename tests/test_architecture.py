"""The package's shape: import layers without cycles, lazy imports only with a reason, every
command in the CLI, `harken --help` without torch, modules and functions of readable size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "harken"

# Lowest first. A module may import modules of its own layer or below (never above), and the
# import graph, counting imports inside functions, has no cycle. A name matches its longest
# prefix here ("decoding" covers harken.decoding.*).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "version"),
    ("audio", "text", "features_np"),
    ("features", "vad", "models", "decoding", "modelfile", "training.sphere", "training.manifests"),
    ("interop.onnx_stream", "interop.onnx_network", "streaming", "diarization", "written"),
    ("model",),
    ("transcribe", "interop", "training", "serving"),
    ("", "compat"),  # "": the package itself (harken/__init__.py)
    ("cli",),
]
# Optional dependencies and torch are imported where used; a function-level import of a
# harken module is allowed only with a comment on the line above saying why.
MAX_MODULE_LINES = 900
MAX_FUNCTION_LINES = 120


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(["harken", *parts])] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported harken module, line, inside a function) for every import of `path`, except
    those only for type checkers."""
    name = next(m for m, p in MODULES.items() if p == path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, True)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            elif isinstance(child, ast.Import):
                found.extend((_resolve(a.name), child.lineno, in_function)
                             for a in child.names if a.name.startswith("harken"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("harken"):
                    for alias in child.names:
                        full = f"{base}.{alias.name}"
                        found.append((full if full in MODULES else _resolve(base), child.lineno,
                                      in_function))
            else:
                visit(child, in_function)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [(target, line, lazy) for target, line, lazy in found if target != name]


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    relative = module[len("harken."):] if module != "harken" else ""
    best, best_length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = relative == prefix or (prefix and relative.startswith(prefix + "."))
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py"
    return best


def test_every_module_has_a_layer_and_imports_none_above_it():
    upward = [f"{source} -> {target} (line {line})"
              for source, edges in GRAPH.items() for target, line, _ in edges
              if _layer(target) > _layer(source)]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target, _, _ in GRAPH[node]:
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                walk(target, path + [target])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_function_level_imports_say_why():
    silent = []
    for module, edges in GRAPH.items():
        lines = MODULES[module].read_text(encoding="utf-8").splitlines()
        for target, line, lazy in edges:
            above = line - 2
            while above > 0 and lines[above].lstrip().startswith(("from ", "import ")):
                above -= 1  # one comment may explain a block of imports
            if lazy and not lines[above].strip().startswith("#"):
                silent.append(f"{module}:{line} imports {target} inside a function without a reason")
    assert silent == []


def test_modules_and_functions_stay_readable():
    too_long = []
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{module}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{module}.{node.name}: {length} lines")
    assert too_long == []


def test_every_command_module_is_registered():
    from harken.cli import build_parser
    from harken.cli.main import COMMANDS

    modules = {p.stem for p in (PACKAGE / "cli").glob("*.py")} - {"__init__", "__main__", "main", "common"}
    assert {c.__name__.rpartition(".")[2] for c in COMMANDS} == modules
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sorted(commands.choices) == sorted([
        "transcribe", "evaluate", "train", "tokenizer", "info", "listen", "lm", "data", "export",
        "import", "models", "download", "serve", "punctuator"])
    lm = commands.choices["lm"]._actions
    assert any(getattr(a, "choices", None) and "tune" in a.choices for a in lm)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["transcribe", "--help"],
                                  ["serve", "--help"], ["data", "prepare", "--help"]])
def test_help_and_version_do_not_import_torch(args):
    code = ("import sys, runpy\nsys.argv = ['harken', *sys.argv[1:]]\n"
            "try:\n    from harken.cli import main\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=120)
    assert result.stderr.strip().endswith("NO TORCH"), result.stderr[-2000:]
    assert "harken" in result.stdout


def test_the_architecture_doc_lists_every_module():
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__main__.py" and f"\n{p.relative_to(PACKAGE)} " not in doc]
    assert missing == [], "run scripts/architecture.py and update docs/architecture.md"
