"""The shape of the code base (docs/architecture.md): no import cycles among the modules of
`pipelines`, pyspark only in the Spark engine, and a study core that never asks which engine
it runs on. Imports inside functions count: a lazy import still ties two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
SPARK_ENGINE = PIPELINES / "engines" / "spark"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PIPELINES.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PIPELINES.rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every absolute name an `import` or `from ... import` in the file names (`from a import
    b` gives `a.b`: the graph resolves it to module `a.b` if there is one, else to `a`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the pipelines modules it imports (a name resolves to its longest module)."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {resolve(n) for n in imported_names(path) if n.startswith("pipelines")}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path `a -> b -> ... -> a`, or [] when there is none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # pipelines.study imports pipelines.analysis only inside its step functions
    assert "pipelines.analysis" in graph["pipelines.study"]
    assert "pipelines.engines.duckdb" in graph["pipelines.engines"]


def test_no_import_cycle_among_pipelines_modules():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_only_the_spark_engine_imports_pyspark():
    outside = [
        module_name(path)
        for path in sorted(PIPELINES.rglob("*.py"))
        if SPARK_ENGINE not in path.parents
        and any(n == "pyspark" or n.startswith("pyspark.") for n in imported_names(path))
    ]
    assert outside == []
    inside = [p for p in SPARK_ENGINE.rglob("*.py") if "pyspark" in str(imported_names(p))]
    assert inside, "the Spark engine is expected to import pyspark (lazily)"


def test_only_the_engines_package_knows_the_spark_engine_s_modules():
    """Outside pipelines/engines nothing imports the Spark engine: the engine is chosen by
    name (`pipelines.engines.engine_for`) and passed in."""
    users = [
        name
        for name, targets in import_graph().items()
        if not name.startswith("pipelines.engines")
        and any(t.startswith("pipelines.engines.spark") for t in targets)
    ]
    assert users == []


def test_the_study_core_has_no_engine_branch():
    text = (PIPELINES / "study.py").read_text(encoding="utf-8").lower()
    assert "spark" not in text


def test_the_module_map_names_every_module():
    """docs/architecture.md names each module by its path, or names its folder and then the
    file (`pipelines/dashboard/views/` ... `accuracy.py`), so the map cannot drift."""
    text = (PIPELINES.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    unnamed = []
    for path in sorted(PIPELINES.rglob("*.py")):
        relative = path.relative_to(PIPELINES.parent).as_posix()
        folder = relative.rpartition("/")[0] + "/"
        if relative in text:
            continue
        if folder in text and f"`{path.name}`" in text[text.index(folder) :]:
            continue
        unnamed.append(relative)
    assert unnamed == []
