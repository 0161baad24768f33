"""Imports flow downward only: frontend → backend.client; workers → backend, models, sim; models → sim."""

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


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _allowed(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_project_imports_flow_downward(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in PROJECT and top != package and not _allowed(name, ALLOWED[package]):
                bad.append(f"{path.relative_to(ROOT)}: {name}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, set()):
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, "imports against the architecture:\n" + "\n".join(bad)


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
