"""Imports flow downward only: frontend → backend.client; workers → backend, models, sim; models → sim.

An import is an import statement anywhere in a file (lazily or not) or a module named by a string literal:
importlib.import_module("…"), __import__("…") and importlib.util.find_spec("…").
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"cli", "frontend", "backend", "workers", "models", "sim"}

# package -> project packages it may import (anywhere in the file, lazily or not)
ALLOWED = {
    "sim": set(),
    "models": {"sim"},
    "backend": {"sim.tasks", "sim.perturb", "sim.errors", "sim.episodes", "sim.video"},
    "workers": {"backend", "models", "sim"},
    "frontend": {"backend.client"},
    "cli": PROJECT,
}
FORBIDDEN_THIRD_PARTY = {"backend": {"torch", "mujoco", "metaworld", "gymnasium"}}
# calls whose first argument names a module: import_module, __import__, find_spec (plain or as attributes)
STRING_IMPORTS = {"import_module", "__import__", "find_spec"}


def _string_import(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in STRING_IMPORTS or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
        return arg.value
    return None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and (name := _string_import(node)):
            names.add(name)
    return names


def _allowed(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def violations(root: Path, package: str) -> list[str]:
    """Imports in `root/package` against ALLOWED and FORBIDDEN_THIRD_PARTY, as 'file: module' lines."""
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        for name in sorted(_imports(path)):
            top = name.split(".")[0]
            if top in PROJECT and top != package and not _allowed(name, ALLOWED[package]):
                bad.append(f"{path.relative_to(root)}: {name}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, set()):
                bad.append(f"{path.relative_to(root)}: {name}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_project_imports_flow_downward(package):
    bad = violations(ROOT, package)
    assert not bad, "imports against the architecture:\n" + "\n".join(bad)


def test_string_imports_count_as_imports(tmp_path):
    """A backend that loads the frontend by name, or probes for it, breaks the rule like an import would;
    a module name the code computes (workers.jobs.stage) is not read, and allowed literals pass."""
    broken = tmp_path / "backend"
    broken.mkdir()
    (broken / "main.py").write_text(
        "import importlib\nimport importlib.util\nfrom importlib import import_module\n\n"
        "def mount(app, module):\n"
        "    if importlib.util.find_spec('frontend.app') is not None:\n"
        "        importlib.import_module('frontend.app').mount(app, '/ui')\n"
        "    import_module('workers.jobs')\n"
        "    __import__('torch')\n"
        "    importlib.import_module(module)\n"
        "    importlib.import_module('sim.episodes')\n"
        "    importlib.import_module('.routes', 'backend.api')\n"
    )
    assert violations(tmp_path, "backend") == [
        "backend/main.py: frontend.app", "backend/main.py: torch", "backend/main.py: workers.jobs"]


def test_importing_the_api_loads_neither_torch_nor_mujoco():
    code = (
        "import sys, importlib.util\n"
        "mod = 'backend.main' if importlib.util.find_spec('backend.main') else 'backend'\n"
        "importlib.import_module(mod)\n"
        "bad = [m for m in ('torch', 'mujoco', 'metaworld', 'workers', 'models') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"backend imported: {out.stdout.strip()}"
