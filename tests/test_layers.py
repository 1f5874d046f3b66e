"""The package's import structure: imports go downward, the engine and the report have no
cycle, the report reads the analysis tables and never analyses, and a resumed run may change
exactly where the data lives and how lines are measured."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from steplines.config import DataLocation, EngineConfig, MeasureConfig, RunConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "steplines"


def _imports(path: Path, *, at_runtime: bool = False) -> set[str]:
    """Modules ``path`` imports, as dotted names under ``steplines`` (relative ones resolved),
    function-level imports included; ``at_runtime``: not those under ``if TYPE_CHECKING:``."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree) if at_runtime else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join((*base, node.module) if node.module else base)
            else:
                name = node.module or ""
            names = [name] + [f"{name}.{a.name}" for a in node.names]
            found.update(n for n in names if n.startswith("steplines"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("steplines"))
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks of ``tree``."""
    out: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if isinstance(node, ast.If) and name == "TYPE_CHECKING":
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _package_imports(package: str, *, at_runtime: bool = False) -> dict[str, set[str]]:
    return {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts): _imports(
            p, at_runtime=at_runtime
        )
        for p in (SRC / package).glob("*.py")
    }


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """An import cycle of ``graph`` (module → the modules of the graph it imports), or []."""
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> list[str]:
        if m in path:
            return [*path[path.index(m) :], m]
        if m in done:
            return []
        for n in sorted(graph[m]):
            if found := visit(n, (*path, m)):
                return found
        done.add(m)
        return []

    for m in sorted(graph):
        if found := visit(m, ()):
            return found
    return []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("engine", ("steplines.measure", "steplines.cli", "steplines.probe", "steplines.rundir")),
        ("measure", ("steplines.cli", "steplines.probe", "steplines.verify")),
    ],
)
def test_imports_go_downward(package: str, forbidden: tuple[str, ...]) -> None:
    for module, names in _package_imports(package).items():
        up = sorted(n for n in names if n.startswith(forbidden))
        assert not up, f"{module} imports {up}"


def test_config_imports_no_layer_above_it() -> None:
    """``steplines.config`` is read by every layer: it imports none of those that build on it
    (it used to build the optimizer with ``steplines.trajectory``, a circle config →
    trajectory → problems → config), not even inside a function."""
    above = ("steplines.trajectory", "steplines.problems", "steplines.measure", "steplines.engine")
    up = sorted(n for n in _imports(SRC / "config.py") if n.startswith(above))
    assert not up, f"steplines.config imports {up}"


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path``, function-level ones included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
    return found


def test_only_the_store_imports_zarr() -> None:
    """Zarr is the store's business: every other module asks :mod:`steplines.store`."""
    store = SRC / "store"
    outside = sorted(
        str(p.relative_to(SRC.parent))
        for p in SRC.rglob("*.py")
        if store not in p.parents and "zarr" in _third_party_imports(p)
    )
    assert not outside, f"import zarr outside steplines.store: {outside}"


def _graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports (the package itself: its ``__init__``)."""
    imports = _package_imports(package)
    init = f"steplines.{package}.__init__"
    return {
        m: {init if n == f"steplines.{package}" else n for n in names} & set(imports) - {m}
        for m, names in imports.items()
    }


def test_engine_modules_import_no_cycle() -> None:
    """Within ``engine/`` the imports form a DAG (the fast engine and the worker pool used to
    import each other)."""
    graph = _graph("engine")
    assert not _cycle(graph), f"import cycle: {' -> '.join(_cycle(graph))}"
    assert "steplines.engine.fast" in graph["steplines.engine.workers"]
    assert "steplines.engine.workers" not in graph["steplines.engine.fast"]


REPORT_MAY_IMPORT = (
    "steplines.analysis.tables",
    "steplines.analysis.settings",
    "steplines.analysis.claims",
    "steplines.analysis.views",
    "steplines.plotting",
    "steplines.store.run",
    "steplines.report",
    "steplines.errors",
    "steplines.atomic",
    "steplines.locks",
)
"""What ``report/`` may import from steplines: the tables it reads, never the line store,
the analysis that writes them, the pooling or the orchestrator ``steplines.reporting`` (and
``steplines.config`` only under ``TYPE_CHECKING``)."""


def _within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def test_the_report_reads_tables_and_never_analyses() -> None:
    """``report/`` draws from the analysis tables alone (issue 22): it imports neither the
    line store nor the analysis that writes the tables, nor ``steplines.reporting``, which
    decides when to analyse."""
    typed = _package_imports("report")
    for module, names in _package_imports("report", at_runtime=True).items():
        bad = sorted(n for n in names if not _within(n, REPORT_MAY_IMPORT))
        assert not bad, f"{module} imports {bad}"
        only_typed = typed[module] - names
        bad = sorted(
            n for n in only_typed if not _within(n, (*REPORT_MAY_IMPORT, "steplines.config"))
        )
        assert not bad, f"{module} imports {bad} (under TYPE_CHECKING)"
    for module, names in typed.items():  # the reasons, spelt out
        for never in (
            "steplines.store.lines",
            "steplines.analysis.run",
            "steplines.analysis.pooled",
            "steplines.reporting",
        ):
            assert not any(_within(n, (never,)) for n in names), f"{module} imports {never}"
        assert "steplines.store" not in names, f"{module} imports steplines.store (LineStore)"
    graph = _graph("report")
    assert not _cycle(graph), f"import cycle: {' -> '.join(_cycle(graph))}"
    # the figures are drawn by the page, and know nothing of it (they used to import each other)
    assert "steplines.report.figures" in graph["steplines.report.page"]
    assert "steplines.report.page" not in graph["steplines.report.figures"]
    data = "steplines.report.data"
    assert "steplines.config" in typed[data] - _package_imports("report", at_runtime=True)[data]


def test_engine_config_is_the_how_of_measure() -> None:
    m = MeasureConfig(engine="reference", workers=2, max_eval_batch=64, compile="off")
    e = EngineConfig.from_measure(m)
    assert (e.engine, e.workers, e.max_eval_batch, e.compile) == ("reference", 2, 64, "off")
    assert EngineConfig.from_config(RunConfig(measure=m)) == e
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    assert names <= set(MeasureConfig.model_fields)
    assert not names & {"precision", "dtype", "grid", "batchnorm", "dropout", "full_batch"}


def test_resume_may_change_where_and_how_only() -> None:
    base = RunConfig()
    how = RunConfig(
        problem=base.problem.model_copy(update={"data_dir": "/elsewhere", "download": True}),
        measure=base.measure.model_copy(
            update={
                "engine": "reference",
                "device": "cpu",
                "max_eval_batch": 32,
                "compile": "off",
                "memory_budget_mb": 1.0,
                "precision_check_every": 3,
                "workers": 2,
            }
        ),
    )
    free = {
        f"{c.SECTION}.{f.name}" for c in (DataLocation, EngineConfig) for f in dataclasses.fields(c)
    }
    assert {d.split(":")[0] for d in base.diff(how)} == free  # every such field is covered
    assert base.resume_diff(how) == []
    what = RunConfig(measure=base.measure.model_copy(update={"precision": "bf16"}))
    assert [d.split(":")[0] for d in base.resume_diff(what)] == ["measure.precision"]
