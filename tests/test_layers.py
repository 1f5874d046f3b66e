"""The package's import structure: imports go downward, the engine has no cycle, and a
resumed run may change exactly where the data lives and how lines are measured."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from steplines.config import DataLocation, EngineConfig, MeasureConfig, RunConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "steplines"


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports, as dotted names under ``steplines`` (relative ones resolved)."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
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


def _package_imports(package: str) -> dict[str, set[str]]:
    return {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts): _imports(p)
        for p in (SRC / package).glob("*.py")
    }


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


def test_engine_modules_import_no_cycle() -> None:
    """Within ``engine/`` the imports form a DAG (the fast engine and the worker pool used to
    import each other)."""
    graph = {
        m: {n for n in names if n in _package_imports("engine") and n != m}
        for m, names in _package_imports("engine").items()
    }
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join((*path, m))}"
        if m not in done:
            for n in graph[m]:
                visit(n, (*path, m))
            done.add(m)

    for m in graph:
        visit(m, ())
    assert "steplines.engine.fast" in graph["steplines.engine.workers"]
    assert "steplines.engine.workers" not in graph["steplines.engine.fast"]


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
