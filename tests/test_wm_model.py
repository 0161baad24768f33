"""WorldModel API: shapes, determinism, recurrent state (cached vs uncached), bad inputs, checkpoints."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import CheckpointError, save_checkpoint
from models.world_model import WorldModel, load_world_model
from models.world_model.config import make_config
from models.world_model.model import RolloutInputError


@pytest.fixture(scope="module")
def wm() -> WorldModel:
    torch.manual_seed(0)
    cfg = make_config("smoke", image_size=32, camera="workspace", context_frames=2)
    model = WorldModel(cfg).eval()
    with torch.no_grad():  # zero-initialised output layers would make every rollout a copy of the context
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0.0, 0.1)
    return model


def _inputs(b: int = 3, t: int = 5, c: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(1)
    ctx = torch.randint(0, 256, (b, c, 3, size, size), dtype=torch.uint8, generator=g)
    act = torch.rand(b, t, 4, generator=g) * 2 - 1
    return ctx, act


def test_rollout_shapes_range_and_metadata(wm):
    ctx, act = _inputs()
    out = wm.rollout(ctx, act)
    assert out.shape == (3, 5, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert wm.image_size == 32 and wm.context_frames == 2 and wm.camera == "workspace"
    assert wm.rollout(ctx, act, decode=False).shape == (3, 5, 4, 8, 8)
    assert not torch.is_inference_mode_enabled()


def test_float_and_uint8_context_agree(wm):
    ctx, act = _inputs()
    assert torch.allclose(wm.rollout(ctx, act), wm.rollout(ctx.float() / 255, act), atol=1e-6)


def test_deterministic_and_action_dependent(wm):
    ctx, act = _inputs()
    a, b = wm.rollout(ctx, act), wm.rollout(ctx, act)
    assert torch.equal(a, b)
    assert (wm.rollout(ctx, -act) - a).abs().max() > 1e-5  # (the dot test checks the direction)


def test_cached_rollout_equals_uncached(wm):
    """Continuing from the carried state equals re-running from the context with the whole action sequence,
    and the batch does not leak between items."""
    ctx, act = _inputs(t=6)
    full = wm.rollout(ctx, act)
    first, state = wm.rollout(ctx, act[:, :2], return_state=True)
    rest, state = wm.rollout(None, act[:, 2:5], state=state, return_state=True)
    last = wm.rollout(None, act[:, 5:], state=state)
    assert torch.allclose(torch.cat([first, rest, last], 1), full, atol=1e-5)
    for t in range(1, 7):  # "uncached": recompute every prefix from scratch
        assert torch.allclose(wm.rollout(ctx, act[:, :t])[:, -1], full[:, t - 1], atol=1e-5)
    single = wm.rollout(ctx[1:2], act[1:2])
    assert torch.allclose(single, full[1:2], atol=1e-5)
    assert torch.allclose(wm.rollout(ctx, act, max_batch=2), full, atol=1e-5)


def test_actions_are_clipped_to_the_training_range(wm):
    ctx, act = _inputs()
    assert torch.allclose(wm.rollout(ctx, act.sign() * 5), wm.rollout(ctx, act.sign()), atol=1e-6)


def test_fewer_context_frames_are_padded(wm):
    ctx, act = _inputs()
    one = wm.rollout(ctx[:, -1:], act)
    assert torch.allclose(one, wm.rollout(ctx[:, -1:].expand(-1, 2, -1, -1, -1), act))


@pytest.mark.parametrize(
    "ctx_shape,act_shape,fill,needle",
    [
        ((2, 2, 3, 16, 16), (2, 4, 4), None, "16x16"),
        ((2, 2, 3, 32, 32), (2, 4, 3), None, "actions must be"),
        ((2, 2, 3, 32, 32), (3, 4, 4), None, "actions must be"),
        ((2, 2, 1, 32, 32), (2, 4, 4), None, "context must be"),
        ((2, 2, 3, 32, 32), (2, 4, 4), float("nan"), "nan"),
        ((2, 2, 3, 32, 32), (2, 4, 4), float("inf"), "nan or inf"),
    ],
)
def test_bad_rollout_inputs_raise_clear_errors(wm, ctx_shape, act_shape, fill, needle):
    ctx = torch.rand(ctx_shape)
    act = torch.zeros(act_shape)
    if fill is not None:
        act[0, 1, 2] = fill
    with pytest.raises(RolloutInputError, match=f"(?i){needle}"):
        wm.rollout(ctx, act)


def test_checkpoint_round_trip(wm, tmp_path):
    wm.save(tmp_path / "ck")
    back = load_world_model(tmp_path / "ck")
    ctx, act = _inputs()
    assert torch.allclose(back.rollout(ctx, act), wm.rollout(ctx, act), atol=1e-5)  # (memory layout differs)
    assert back.cfg.to_json() == wm.cfg.to_json()


def test_checkpoint_of_another_kind_or_architecture_is_refused(wm, tmp_path):
    save_checkpoint(tmp_path / "policy", "policy", {"architecture": "flow"}, {"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="'policy' checkpoint, expected 'world_model'"):
        load_world_model(tmp_path / "policy")
    save_checkpoint(tmp_path / "tok", "world_model", {"architecture": "fsq-transformer/1"}, {"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="architecture 'fsq-transformer/1'"):
        load_world_model(tmp_path / "tok")
    # same architecture name, different widths: the mismatching tensor is named
    wide = WorldModel(make_config("smoke", image_size=32, camera="workspace", dyn_channels=32))
    wide.save(tmp_path / "wide")
    meta_cfg = wm.cfg.to_json()
    import json

    cfg_path = tmp_path / "wide" / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta["config"] = meta_cfg
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match this architecture: shape mismatch dynamics"):
        load_world_model(tmp_path / "wide")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_world_model(tmp_path / "nothing")
