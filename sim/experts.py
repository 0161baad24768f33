"""MetaWorld's scripted expert policies (`metaworld.policies.ENV_POLICY_MAP`)."""

from __future__ import annotations

import numpy as np


class ExpertPolicy:
    """Closed-loop scripted expert for one task; acts on MetaWorld's 39-d observation."""

    def __init__(self, task: str) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.task = task
        self._policy = ENV_POLICY_MAP[task]()

    def __call__(self, env_obs: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(self._policy.get_action(env_obs), dtype=np.float32), -1.0, 1.0)
