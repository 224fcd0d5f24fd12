"""The package's shape, read from the source with `ast` (lazy imports inside functions
included): face -> recipes -> components -> shared -> models -> base.

- a unit (a top-level module or sub-package) imports only units of a lower layer, or of
  its own layer where that layer is below the components; components never import one
  another (pipeline and evaluate never meet; evaluate never imports train) nor a recipe;
- the module import graph has no cycle;
- only `rundir.py` spells a run directory's file names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "saferinstruct"
LAYERS = [
    ("base", {"__init__", "errors", "paths", "records", "io", "config", "rundir", "funnel",
              "drops", "prompts", "progress", "outcome", "threads", "memory", "machine", "labels",
              "estimate"}),
    ("models", {"llm"}),
    ("shared", {"measures", "preferences", "render"}),
    ("components", {"pipeline", "train", "evaluate", "report", "serve", "review", "scaffold"}),
    ("recipes", {"api", "runner", "recipes"}),
    ("face", {"cli", "__main__"}),
]  # fmt: skip
RANK = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
SHARED_WITHIN = {"base", "models", "shared", "recipes", "face"}
"""Layers whose units may import each other (components may not)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every saferinstruct module `name` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("saferinstruct")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("saferinstruct"):
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return out - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def unit(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_unit_has_a_layer():
    assert {unit(m) for m in modules()} <= set(RANK), "classify new modules in LAYERS"


def test_imports_go_down_the_layers():
    wrong = []
    for src, targets in graph().items():
        for dst in targets:
            a, b = unit(src), unit(dst)
            if a == b:
                continue
            layer = LAYERS[RANK[a]][0]
            ok = RANK[b] < RANK[a] or (RANK[b] == RANK[a] and layer in SHARED_WITHIN)
            if not ok:
                wrong.append(f"{src} -> {dst}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `g` (node -> successors) as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(g):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    """Neither between modules nor between packages (units)."""
    g = graph()
    units: dict[str, set[str]] = {}
    for src, targets in g.items():
        units.setdefault(unit(src), set()).update(unit(t) for t in targets if unit(t) != unit(src))
    for what, edges in (("modules", g), ("packages", units)):
        cycle = find_cycle(edges)
        assert cycle is None, f"import cycle between {what}: " + " -> ".join(cycle or [])
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The graph reader sees a lazy import inside a function, relative or absolute."""
    f = tmp_path / "saferinstruct" / "pipeline" / "x.py"
    f.parent.mkdir(parents=True)
    f.write_text("def g():\n    from ..evaluate import safety\n    import saferinstruct.api\n")
    known = {"saferinstruct.evaluate.safety", "saferinstruct.api"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "saferinstruct"
    try:
        assert imports_of(module_name(f), f, known) == known
    finally:
        PACKAGE = saved


RUN_DIR_NAME = re.compile(
    r"(config\.yaml|funnel\.json|report\.(html|md|json)|report_files"
    r"|(train|test)\.jsonl|\d\d-[a-z-]+\.jsonl)(/.*)?|(stages|dataset)/.*"
)
FOLDERS = {"stages", "dataset"}
"""Run-directory folders: flagged where a path is joined with them (`run / "stages"`)."""


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def run_dir_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    skip = docstrings(tree)
    joined = {id(side) for node in ast.walk(tree)
              if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
              for side in (node.left, node.right)}  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            value = node.value.strip()
            if RUN_DIR_NAME.fullmatch(value) or (value in FOLDERS and id(node) in joined):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    return found


def test_only_rundir_spells_run_directory_file_names():
    found = [hit for name, path in modules().items() if name != "saferinstruct.rundir"
             for hit in run_dir_names(path)]  # fmt: skip
    assert not found, "run-directory names outside rundir.py:\n" + "\n".join(found)
    assert run_dir_names(PACKAGE / "rundir.py"), "the check sees rundir.py's own names"
