"""WMConfig checks its fields when built, from a preset, from a checkpoint and on resume."""

from __future__ import annotations

import json

import pytest

from models.checkpoint import FORMAT
from models.world_model.config import WMConfig, WMConfigError, make_config
from models.world_model.model import ARCH, KIND
from models.world_model.train import _resolve_config, train_world_model


@pytest.mark.parametrize(("field", "value"), [("ae_batch", 0), ("dyn_lr", 0.0), ("heldout_fraction", 1.0),
                                              ("eval_every", 0), ("ae_steps", -1), ("device", "gpu")])
def test_bad_values_fail_naming_the_field(field, value):
    with pytest.raises(WMConfigError, match=f"^{field} must be"):
        make_config("smoke", **{field: value})
    with pytest.raises(WMConfigError, match=f"^{field} must be"):
        WMConfig(**{field: value})


def test_steps_split_between_the_phases():
    cfg = make_config("smoke", steps=10, eval_every=5)
    assert (cfg.ae_steps, cfg.dyn_steps, cfg.eval_every) == (5, 5, 5)
    with pytest.raises(WMConfigError, match="steps must be positive"):
        make_config("smoke", steps=0)


def _saved_run(folder, **changes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**make_config("smoke").to_json(), **changes}
    meta = {"format": FORMAT, "kind": KIND, "architecture": ARCH, "config": cfg}
    (folder / "config.json").write_text(json.dumps(meta))


def test_resume_checks_the_saved_config(tmp_path):
    _saved_run(tmp_path / "bad", dyn_batch=0)
    with pytest.raises(WMConfigError, match=r"^dyn_batch must be at least 1"):
        train_world_model("unused.h5", str(tmp_path / "bad"), preset="smoke", resume=True)
    _saved_run(tmp_path / "ok")
    cfg = _resolve_config(tmp_path / "ok", "smoke", 12, True, {"eval_every": 3})
    assert cfg.ae_steps + cfg.dyn_steps == 12 and cfg.eval_every == 3
    with pytest.raises(WMConfigError, match=r"^eval_every must be at least 1"):
        _resolve_config(tmp_path / "ok", "smoke", None, True, {"eval_every": 0})
