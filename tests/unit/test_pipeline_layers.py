"""The pipeline's modules form layers: no import cycle among them, and one module owns job
state.

Imports are read from the source with ast, every one of them: at module level, inside a
function (the usual way to hide a cycle) and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import bananabatch.pipeline

PIPELINE = Path(bananabatch.pipeline.__file__).parent
PACKAGE = "bananabatch.pipeline"


def _imports(source: str) -> set[str]:
    """The pipeline modules a module's source imports, by their short names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == PACKAGE:
                found |= {alias.name for alias in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {
                alias.name.split(".")[2]
                for alias in node.names
                if alias.name.startswith(PACKAGE + ".")
            }
    return found


def _sources() -> dict[str, str]:
    """Each pipeline module's source by its short name; a package (pipeline/intake/) is one
    module made of all its files."""
    sources: dict[str, str] = {}
    for path in sorted(PIPELINE.rglob("*.py")):
        parts = path.relative_to(PIPELINE).parts
        name = parts[0] if len(parts) > 1 else path.stem
        sources[name] = sources.get(name, "") + path.read_text() + "\n"
    return sources


def pipeline_graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: (_imports(source) & sources.keys()) - {name} for name, source in sources.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, first repeated last), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for dep in sorted(graph.get(name, ())):
            cycle = visit(dep, [*path, name])
            if cycle is not None:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function_or_behind_type_checking() -> None:
    hidden = {
        "a": _imports("from bananabatch.pipeline import b\n"),
        "b": _imports("def f():\n    from bananabatch.pipeline.c import x\n"),
        "c": _imports("if TYPE_CHECKING:\n    import bananabatch.pipeline.a\n"),
        "d": _imports("from bananabatch.pipeline import a\n"),
    }
    assert find_cycle(hidden) == ["a", "b", "c", "a"]
    assert find_cycle({**hidden, "c": set()}) is None


def test_no_pipeline_module_imports_itself_back_through_others() -> None:
    graph = pipeline_graph()
    assert {"budget", "finalize", "lifecycle", "submit", "model_gone"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in pipeline/: " + " -> ".join(cycle or [])


def test_lifecycle_depends_on_no_pipeline_module_but_the_records() -> None:
    # Every module may ask it for a move, so it may ask none of them for anything.
    assert pipeline_graph()["lifecycle"] <= {"repo", "runtime"}


JOB_WRITES = frozenset({"create_job", "move_job", "patch_job"})


def _job_writes(source: str) -> list[str]:
    """Calls that write a job record: create it, move its state, change its fields."""
    return [
        node.func.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in JOB_WRITES
    ]


def test_only_the_lifecycle_module_writes_a_job_record() -> None:
    assert _job_writes("rt.repo.move_job('j', JobState.RUNNING)") == ["move_job"]
    assert _job_writes("def f(rt):\n    return rt.repo.patch_job('j', g)") == ["patch_job"]
    package = PIPELINE.parent
    scanned = {
        path.relative_to(package).as_posix(): path.read_text() for path in package.rglob("*.py")
    }
    assert "pipeline/intake/job.py" in scanned  # a package's modules are read too
    writers = {name for name, source in scanned.items() if _job_writes(source)}
    assert writers == {"pipeline/lifecycle.py"}
