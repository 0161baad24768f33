"""The API process stays light: no torch, MuJoCo, workers, models, Gradio or frontend at import time."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "mujoco", "metaworld", "workers", "models", "gradio", "frontend")


def _loaded_after(statement: str) -> list[str]:
    code = (f"import sys, json\n{statement}\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_backend_main_and_app_creation_load_nothing_heavy(tmp_path):
    stmt = (f"import backend.main\nfrom backend.core.config import Settings\n"
            f"backend.main.create_app(Settings(home={str(tmp_path)!r}), reaper=False)")
    assert _loaded_after(stmt) == []


def test_client_loads_nothing_heavy_and_no_server_libraries():
    server = ("fastapi", "sqlalchemy", "celery", "torch", "mujoco")
    code = f"import sys, json, backend.client\nprint(json.dumps([m for m in {server!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_worker_main_process_does_not_load_torch_or_mujoco():
    # CUDA must not be initialised in the parent of a prefork pool; stages load inside the job.
    assert [m for m in _loaded_after("import workers.app") if m in ("torch", "mujoco", "metaworld")] == []


def test_the_served_app_without_ui_loads_no_gradio(tmp_path):
    stmt = (f"from cli.studio_app import create_app\nfrom backend.core.config import Settings\n"
            f"create_app(Settings(home={str(tmp_path)!r}, ui=False), reaper=False)")
    assert _loaded_after(stmt) == []
