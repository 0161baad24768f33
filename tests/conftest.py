"""Shared fixtures: a tiny expert dataset collected once per session, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> CliResult:
    """Run `vlarft ARGS` in a fresh interpreter, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=timeout,
        cwd=ROOT, env={**os.environ, **(env or {})},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(res: CliResult, *needles: str) -> None:
    """Exit code 2 and a single 'error: ...' line naming the problem; never a traceback."""
    assert res.code == 2, (res.code, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Two smoke tasks × 2 expert episodes at 64 px (about 5 s)."""
    from sim.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("data") / "tiny.h5"
    collect(CollectConfig(tasks=("drawer-open-v3", "button-press-topdown-v3"), episodes=2, workers=1), str(out))
    return out
