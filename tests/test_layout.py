"""The house's shape, read from the source: no two modules import each other (directly or round a longer
circle), the package never imports a stage, distill.py never loads game code, and each stage's main is short
enough to read as the method, with distill's backward pass written in it."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("collect", "extract", "distill", "evaluate")


def modules():
    """{module name: source path} of the stages and the package."""
    found = {s: os.path.join(ROOT, f"{s}.py") for s in STAGES}
    for name in os.listdir(os.path.join(ROOT, "oel")):
        if name.endswith(".py") and name != "__init__.py":
            found[f"oel.{name[:-3]}"] = os.path.join(ROOT, "oel", name)
    return found


def imports(path, known):
    """The project modules a file imports anywhere in it (function-level imports too)."""
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
            out |= {node.module} & set(known)
    return out


def graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def reachable(g, start):
    seen, todo = set(), [start]
    while todo:
        for m in g[todo.pop()] - seen:
            seen.add(m)
            todo.append(m)
    return seen


def test_no_import_circle_and_nothing_reaches_up():
    g = graph()
    assert [m for m in g if m in reachable(g, m)] == []  # a module that reaches itself sits on a circle
    assert {m: g[m] & set(STAGES) for m in g if m.startswith("oel.") and g[m] & set(STAGES)} == {}
    dynamic = [m for m, path in modules().items() if m.startswith("oel.") and "import_module(" in open(path).read()]
    assert dynamic == []  # nor by name at run time
    games = {"oel.games", "oel.textworld_games", "oel.arena_games", "oel.play", "oel.describe_games"}
    assert reachable(g, "distill") & games == set()


def test_reading_the_graph_sees_a_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert [m for m in g if m in reachable(g, m)] == ["a", "b", "c"]


def test_each_main_is_the_method_in_a_screenful():
    for stage in STAGES:
        tree = ast.parse(open(os.path.join(ROOT, f"{stage}.py"), encoding="utf-8").read())
        main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
        assert main.end_lineno - main.lineno + 1 <= 80, stage
        if stage == "distill":
            calls = [
                n.func.attr for n in ast.walk(main) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            ]
            assert "backward" in calls and "step" in calls and "clip_grad_norm_" in calls
