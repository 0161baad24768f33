"""Issue 16's speed levers keep the maths: the same seed gives the same losses and weights with each lever on or
off, and a bf16 rollout gives the frames of a float32 one within tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_wm_synthetic import write_dot_dataset

from models.policy.train import train_policy
from models.world_model import WorldModel, load_world_model
from models.world_model.config import WMConfigError, make_config
from models.world_model.model import RolloutInputError, native_bf16
from models.world_model.train import train_world_model

WM_FAST = dict(ae_steps=6, dyn_steps=6, checkpoint_every=6, eval_every=6)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows(out: Path, key: str) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


def _assert_same_losses(a: Path, b: Path, key: str) -> None:
    ra, rb = _rows(a, key), _rows(b, key)
    assert ra and [s for s, _ in ra] == [s for s, _ in rb]
    for (_, x), (_, y) in zip(ra, rb, strict=True):
        assert x == pytest.approx(y, rel=1e-4, abs=1e-6)


def test_world_model_fused_optimizer_gives_the_same_training(tmp_path):
    data = write_dot_dataset(tmp_path / "dots.h5", episodes=6, length=16)
    runs = {}
    for fused in (False, True):
        out = tmp_path / f"fused-{fused}"
        train_world_model(str(data), str(out), preset="smoke", fused_optimizer=fused, **WM_FAST)
        runs[fused] = out
    _assert_same_losses(runs[False], runs[True], "loss")
    wa, wb = load_world_model(runs[False]).state_dict(), load_world_model(runs[True]).state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16: training stays float32 there")
def test_world_model_bf16_training_is_on_and_close_to_float32(tmp_path):
    """bf16 autocast changes the rounding, not the recipe: the losses differ (the lever is on) but stay close, and
    the weights stay float32."""
    data = write_dot_dataset(tmp_path / "dots.h5", episodes=6, length=16)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = tmp_path / dtype
        train_world_model(str(data), str(runs[dtype]), preset="smoke", train_dtype=dtype, **WM_FAST)
    for key in ("loss", "latent_mse"):
        ra, rb = _rows(runs["float32"], key), _rows(runs["bfloat16"], key)
        assert ra and [s for s, _ in ra] == [s for s, _ in rb]
        assert any(x != y for (_, x), (_, y) in zip(ra, rb, strict=True))
        for (_, x), (_, y) in zip(ra, rb, strict=True):
            assert y == pytest.approx(x, rel=0.1, abs=1e-3)
    assert all(v.dtype == torch.float32 for v in load_world_model(runs["bfloat16"]).state_dict().values()
               if v.is_floating_point())
    with pytest.raises(WMConfigError, match="train_dtype must be one of"):
        make_config("smoke", train_dtype="float16")


@pytest.mark.parametrize("lever", ["fused_optimizer", "channels_last"])
def test_policy_levers_give_the_same_training(tiny_dataset, tmp_path, lever):
    kw = dict(preset="smoke", steps=8, log_every=2, eval_every=8, save_every=8, base_at=0.0,
              fused_optimizer=False, channels_last=False)
    train_policy(str(tiny_dataset), str(tmp_path / "off"), **kw)
    train_policy(str(tiny_dataset), str(tmp_path / "on"), **{**kw, lever: True})
    for key in ("fm_loss", "state_loss", "grad_norm"):
        _assert_same_losses(tmp_path / "off", tmp_path / "on", key)


def _random_world_model() -> WorldModel:
    """A smoke world model with every weight drawn at random (a fresh one copies the context frame exactly)."""
    torch.manual_seed(0)
    wm = WorldModel(make_config("smoke", image_size=32, camera="workspace"))
    with torch.no_grad():
        for p in wm.parameters():
            p.normal_(0.0, 0.1)
    return wm.to(memory_format=torch.channels_last).eval()


@pytest.mark.skipif(not native_bf16(), reason="bf16 rollouts fall back to float32 on this CPU")
def test_bf16_rollout_matches_float32_within_tolerance():
    wm = _random_world_model()
    gen = torch.Generator().manual_seed(0)
    context = torch.randint(0, 256, (6, 1, 3, 32, 32), dtype=torch.uint8, generator=gen)
    actions = torch.rand(6, 4, 4, generator=gen) * 2 - 1
    ref = wm.rollout(context, actions)
    wm.set_rollout_dtype("bfloat16")
    low = wm.rollout(context, actions)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert not torch.equal(low, ref)  # the lever is really on
    assert (low - ref).abs().mean() < 2e-3 and (low - ref).abs().max() < 0.05
    z, proprio, last = wm.imagine_chunk(context[:, 0].float() / 255.0, actions)
    assert z.dtype == proprio.dtype == last.dtype == torch.float32
    torch.testing.assert_close(last, low[:, -1], rtol=0, atol=1e-5)  # the same path as rollout
    assert torch.equal(wm.rollout(context, actions), low)  # still deterministic


def test_rollout_dtype_is_checked(tmp_path):
    with pytest.raises(WMConfigError, match="rollout_dtype must be one of float32, bfloat16"):
        make_config("smoke", rollout_dtype="float16")
    wm = _random_world_model()
    with pytest.raises(RolloutInputError, match="rollout dtype must be one of"):
        wm.set_rollout_dtype("int8")
    wm.save(tmp_path / "wm")
    assert load_world_model(tmp_path / "wm").rollout_dtype == "float32"
    assert load_world_model(tmp_path / "wm", rollout_dtype="bfloat16").rollout_dtype == "bfloat16"


def test_begin_encodes_the_last_context_frame_once_with_the_same_result():
    wm = _random_world_model()
    frames = torch.rand(3, 2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        state = wm.begin(frames)
        z_all = wm.ae.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        separate = wm.ae.context_state(frames[:, -1])  # encodes the last frame a second time
    for k in separate:
        torch.testing.assert_close(state.ctx[k], separate[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.z, z_all[:, -1], rtol=1e-5, atol=1e-6)
