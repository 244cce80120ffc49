"""The shape of the package: imports point one way, no cycles, small modules, one owner of
the run folder's names.

The import graph is read from the source with ``ast`` (every import, also those inside
functions; relative imports resolved; cli's command table counts as cli's imports), so a
lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nlrepro"
MAX_LINES = 400

# Bottom to top.  A module may import modules of its own level or below, never above.
LAYERS: list[tuple[str, ...]] = [
    # names and plain helpers; placement is data (the rule that compiles (blocks, stages) into
    # block indices), which config needs to validate a placement before anything runs
    ("nlrepro", "nlrepro.errors", "nlrepro.choices", "nlrepro.utils",
     "nlrepro.models.placement"),
    ("nlrepro.config",),
    ("nlrepro.models", "nlrepro.data"),
    ("nlrepro.proxy", "nlrepro.info"),
    ("nlrepro.run",),
    ("nlrepro.sweep",),
    ("nlrepro.report", "nlrepro.figure3", "nlrepro.tools"),
    ("nlrepro.cli", "nlrepro.__main__"),
]

# Imports inside a function that are not there to dodge a cycle, with the reason.
LAZY_OK = {
    ("nlrepro.report.tables", "nlrepro.report.plots"):
        "plots selects matplotlib's Agg backend; a notebook imports tables without it",
}

# The run folder's file names: spelled only in run/rundir.py.
RUN_FILES = ("summary.json", "row.json", "config.yaml", "error.txt", "last.ckpt",
             "metrics.csv", "history.csv", "elapsed.json", "job.txt", "lock")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(name: str) -> int:
    """The level of the longest prefix of ``name`` listed in ``LAYERS``."""
    best, level = "", None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    if level is None:
        raise AssertionError(f"{name} belongs to no layer: add it to LAYERS")
    return level


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported nlrepro module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def add(target: str, node: ast.AST, lazy: bool) -> None:
        if target == "nlrepro" or target.startswith("nlrepro."):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            found.append((target, node.lineno, lazy))

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, lazy)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else base, child, lazy)
            elif (name == "nlrepro.cli" and isinstance(child, ast.Constant)
                  and isinstance(child.value, str) and child.value in known):
                add(child.value, child, True)  # COMMANDS: imported by importlib on demand
            visit(child, inner)

    visit(tree, False)
    return found


def graph(root: Path = PACKAGE) -> dict[str, list[tuple[str, int, bool]]]:
    mods = modules(root)
    known = set(mods)
    return {name: [e for e in imports(name, path, known) if e[0] != name]
            for name, path in mods.items()}


def layer_violations(edges: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    out = []
    for src, targets in edges.items():
        for dst, line, _ in targets:
            if layer_of(dst) > layer_of(src):
                out.append(f"{src}:{line} imports {dst} (layer {layer_of(src)} -> "
                           f"{layer_of(dst)}, against the order)")
    return out


def cycles(edges: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in edges.get(v, []):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def _is_package_init(src: str, dst: str) -> bool:
    """``nlrepro.sweep`` re-exporting ``nlrepro.sweep.grid``: a package importing its own
    module is not a dependency between modules (the module imports its package implicitly)."""
    return dst.startswith(src + ".")


def test_every_module_belongs_to_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_follow_the_layer_order():
    bad = layer_violations(graph())
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycle():
    edges = {src: [e for e in targets if not _is_package_init(src, e[0])]
             for src, targets in graph().items()}
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_lazy_import_inside_the_package_without_a_reason():
    lazy = [(src, dst, line) for src, targets in graph().items() for dst, line, is_lazy in targets
            if is_lazy and src != "nlrepro.cli" and (src, dst) not in LAZY_OK]
    assert lazy == [], "an import inside a function hides a dependency; import it on top"


def test_the_check_sees_a_back_import_and_a_cycle(tmp_path):
    """The checks themselves: a model module importing the training driver is reported, both
    against the order and as a cycle."""
    root = tmp_path / "nlrepro"
    for sub in ("models", "run"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "models" / "resnet3d.py").write_text("def f():\n    import nlrepro.run.train\n")
    (root / "run" / "train.py").write_text("from ..models import resnet3d\n")
    edges = graph(root)
    assert layer_violations(edges) == [
        "nlrepro.models.resnet3d:2 imports nlrepro.run.train (layer 2 -> 4, against the order)"]
    assert cycles(edges) == [["nlrepro.models.resnet3d", "nlrepro.run.train"]]


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES}): split it"


def test_run_folder_names_are_spelled_only_in_rundir():
    owner = PACKAGE / "run" / "rundir.py"
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == owner:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in RUN_FILES:
                spelled.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}")
    assert spelled == []
