"""The policy's training config checks its fields when built, from a preset and on resume."""

from __future__ import annotations

import pytest

from models.checkpoint import save_train_state
from models.policy.config import PRESETS, PolicyConfigError, TrainConfig, make_train_config
from models.policy.train import train_policy


@pytest.mark.parametrize(("field", "value"), [("lr", 0.0), ("batch_size", 0), ("grad_clip", -1.0), ("ema", 1.0),
                                              ("warmup", -1), ("label", "noisy"), ("device", "gpu")])
def test_bad_values_fail_naming_the_field(field, value):
    with pytest.raises(PolicyConfigError, match=f"^{field} must be"):
        make_train_config("smoke", **{field: value})
    with pytest.raises(PolicyConfigError, match=f"^{field} must be"):
        TrainConfig(**{field: value})


def test_resume_rebuilds_the_saved_config_through_its_checks(tmp_path):
    data = tmp_path / "data.h5"
    data.write_bytes(b"")  # never opened: the saved config fails first
    (tmp_path / "run").mkdir()
    save_train_state(tmp_path / "run", {"cfg": {**PRESETS["smoke"].to_json(), "lr": -1e-3}, "datasets": [str(data)]})
    with pytest.raises(PolicyConfigError, match=r"^lr must be positive"):
        train_policy(str(data), str(tmp_path / "run"), resume=True)
