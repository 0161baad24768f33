"""Dropdown choices the tabs share: trained checkpoints (as model references), tasks, perturbations."""

from __future__ import annotations

from backend.client import CheckpointOut, StudioClient

EXPERT = ("scripted expert (MetaWorld)", "expert")


def checkpoint_label(cp: CheckpointOut) -> str:
    run = f"run #{cp.run_id} {cp.run_kind}" + (f" “{cp.run_name}”" if cp.run_name else "")
    return f"{cp.name} · {run} · {cp.updated_at:%m-%d %H:%M}"


def checkpoints(c: StudioClient, kind: str) -> list[tuple[str, str]]:
    return [(checkpoint_label(cp), cp.ref) for cp in c.checkpoints(kind=kind)]


def policy_choices(c: StudioClient, expert: bool = True) -> list[tuple[str, str]]:
    return ([EXPERT] if expert else []) + checkpoints(c, "policy")


def guess_pair(cps: list[CheckpointOut]) -> tuple[str | None, str | None]:
    """A sensible (base, fine-tuned) pair from newest-first policy checkpoints: the newest RFT one, and the
    base policy it most likely started from (a 'base' snapshot of the same or an earlier run)."""
    tuned = next((cp for cp in cps if cp.run_kind == "rft" or cp.name.split("/")[0] == "rft"), None)
    rest = [cp for cp in cps if cp is not tuned]
    base = next((cp for cp in rest if cp.name.split("/")[-1] == "base"), rest[0] if rest else None)
    if tuned is None and rest:
        tuned = next((cp for cp in rest if cp is not base), None)
    return (base.ref if base else None), (tuned.ref if tuned else None)
