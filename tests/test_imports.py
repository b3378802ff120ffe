"""Every module of the package imports on its own, and no two import each other in a circle."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffusion_plugin"


def module_files(package):
    """{dotted name: file} of every module under ``package`` (``__init__`` as the package)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(package):
    """{module: the package's modules it imports anywhere in its body, functions included}."""
    modules = module_files(package)
    graph = {}
    for name, path in modules.items():
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                # ``from a import b`` imports the module a.b where there is one, else a
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            imported.update(t for t in targets if t in modules and t != name)
        graph[name] = imported
    return graph


def find_circle(graph):
    """One import circle of ``graph`` as [a, b, ..., a], or None."""
    state = {}

    def visit(name, path):
        if state.get(name) == "open":
            return path[path.index(name):] + [name]
        if state.get(name) == "done":
            return None
        state[name] = "open"
        for target in sorted(graph[name]):
            circle = visit(target, path + [name])
            if circle:
                return circle
        state[name] = "done"
        return None

    for name in sorted(graph):
        circle = visit(name, [])
        if circle:
            return circle
    return None


def test_import_graph_is_acyclic():
    graph = import_graph(PACKAGE)
    assert "diffusion_plugin.models.diffusion_xlmr" in graph["diffusion_plugin.tasks.prompted_translation"]
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_walk_finds_circles_through_function_and_relative_imports(tmp_path):
    package = tmp_path / "diffusion_plugin"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from diffusion_plugin.sub.b import x\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    graph = import_graph(package)
    assert graph["diffusion_plugin.a"] == {"diffusion_plugin.sub.b"}
    assert graph["diffusion_plugin.sub.b"] == {"diffusion_plugin.a"}
    assert find_circle(graph) == ["diffusion_plugin.a", "diffusion_plugin.sub.b", "diffusion_plugin.a"]


@pytest.mark.slow  # 2 minutes for 21 interpreters on one loaded core
def test_each_module_imports_alone():
    """One fresh interpreter per module, all running at once."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE.parent), env.get("PYTHONPATH")]))
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            cwd=PACKAGE.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for name in module_files(PACKAGE)
    }
    failures = {}
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=600)
        if process.returncode != 0:
            failures[name] = stderr[-2000:]
    assert len(processes) >= 20 and not failures, "\n".join(f"{n}:\n{e}" for n, e in failures.items())
