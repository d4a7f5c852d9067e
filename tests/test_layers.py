"""The tree shows the layers and imports only go down: core -> study -> report -> cli (docs/architecture.md), and
no module reaches itself through its imports (no circle inside a layer either).

Checked on the source (every relative import, at any depth, including those inside functions and under
TYPE_CHECKING), and each checker itself is checked on a planted upward import and a planted circle."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "isokl"
RANK = {"core": 0, "study": 1, "report": 2}  # anything else in the package (cli, __init__) sits on top


def _rank(parts: tuple[str, ...]) -> int:
    return RANK.get(parts[0], len(RANK)) if parts else len(RANK)


def upward_imports(root: Path) -> list[str]:
    """'module -> target' for every relative import from a lower layer to a higher one."""
    bad = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).with_suffix("").parts
        here = rel[:-1] if rel[-1] == "__init__" else rel  # the module's dotted path inside the package
        pkg = rel[:-1]  # the package the file lives in
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = pkg[: len(pkg) - (node.level - 1)]
            targets = [(*base, *(node.module or "").split("."))] if node.module else [(*base, a.name) for a in node.names]
            for t in targets:
                t = tuple(x for x in t if x)
                if t and t[0] == "__version__":
                    continue  # the package's version string, not a layer
                if _rank(t) > _rank(here):
                    bad.append(f"{'.'.join(here)} -> {'.'.join(t)}")
    return bad


def test_imports_only_go_down():
    assert (PACKAGE / "core").is_dir() and (PACKAGE / "study").is_dir() and (PACKAGE / "report").is_dir()
    assert upward_imports(PACKAGE) == []


def test_the_check_catches_a_planted_upward_import(tmp_path):
    for layer in RANK:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "core" / "rollout.py").write_text("def f():\n    from ..study.records import FILES  # inside a function\n")
    (tmp_path / "report" / "table.py").write_text("from ..core.stats.statistic import P95\nfrom .. import cli\n")
    (tmp_path / "study" / "sweep.py").write_text("from ..report import build\n")
    assert upward_imports(tmp_path) == ["core.rollout -> study.records", "report.table -> cli", "study.sweep -> report"]


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (relative imports anywhere in the file). `from . import x` names
    module x where x is one, else the package itself (its __init__); a submodule's own parent package, which Python
    imports first anyway, counts only where it is named."""
    files = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).with_suffix("").parts
        files[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = rel
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, rel in files.items():
        pkg = rel[:-1]
        for node in ast.walk(ast.parse((root / Path(*rel)).with_suffix(".py").read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = pkg[: len(pkg) - (node.level - 1)]
            target = ".".join((*base, *(node.module.split(".") if node.module else ())))
            names = [f"{target}.{a.name}".strip(".") for a in node.names]
            hits = [n for n in names if n in files] if not node.module or all(n in files for n in names) else []
            if not hits or len(hits) < len(names):
                hits.append(target)
            graph[mod] |= {h for h in hits if h in files and h != mod}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected groups of two or more modules), each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_module_imports_itself_through_others():
    assert circles(import_graph(PACKAGE)) == []


def test_the_circle_check_catches_a_planted_circle(tmp_path):
    (tmp_path / "core" / "model").mkdir(parents=True)
    for f in ("core/__init__.py", "core/model/__init__.py", "core/calibrate.py"):
        (tmp_path / f).write_text("")
    (tmp_path / "core" / "model" / "hooks.py").write_text("if TYPE_CHECKING:\n    from ..formats.vector import Vector\n")
    (tmp_path / "core" / "formats").mkdir()
    (tmp_path / "core" / "formats" / "__init__.py").write_text("")
    (tmp_path / "core" / "formats" / "vector.py").write_text("def f():\n    from ..model import reading\n")
    (tmp_path / "core" / "model" / "reading.py").write_text("from .hooks import capture\n")
    # a package whose __init__ registers its submodules, which import it back: also a circle
    (tmp_path / "core" / "methods").mkdir()
    (tmp_path / "core" / "methods" / "__init__.py").write_text("from . import pca\n")
    (tmp_path / "core" / "methods" / "pca.py").write_text("from . import register\n")
    assert circles(import_graph(tmp_path)) == [
        ["core.formats.vector", "core.model.hooks", "core.model.reading"],
        ["core.methods", "core.methods.pca"],
    ]


def test_the_report_layer_imports_no_torch_at_module_level():
    """The report rebuilds from files on a machine without torch: no module there imports torch (tested end to end
    in test_sweep_report; this names the file if someone adds one)."""
    for p in (PACKAGE / "report").rglob("*.py"):
        tree = ast.parse(p.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert "torch" not in names, p


def test_one_atomic_write_scheme_everywhere():
    """Every temporary-then-rename in the package goes through `core.model.files` (the one naming scheme `is_temporary`
    knows): no module renames a file or folder onto its target by hand."""
    by_hand = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "files.py" and re.search(r"os\.replace\(|\.rename\(|tmp\.replace\(", p.read_text())
    ]
    assert by_hand == []
