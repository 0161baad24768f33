"""Run options have one definition: the API's typed option models (backend/params.py). The algorithms'
dataclasses, their presets, the pipeline's overrides and the CLI's flags are checked against them."""

from __future__ import annotations

import dataclasses

import pytest
import typer

import backend.params as bp
from cli.rft_cmds import rft

RUN_MODELS = [m for m in vars(bp).values()
              if isinstance(m, type) and issubclass(m, bp.BaseModel) and m not in (bp.Params, bp.Options, bp.BaseModel)]


@pytest.mark.parametrize("model", RUN_MODELS, ids=lambda m: m.__name__)
def test_every_option_has_a_one_line_description(model):
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
        assert "\n" not in field.description


def _algorithms():
    from models import rft as rft_module
    from models import rl

    return [(bp.RFTOptions, rft_module.RFTConfig, rft_module.PRESETS), (bp.RLOptions, rl.RLConfig, rl.PRESETS)]


@pytest.mark.parametrize("index", [0, 1])
def test_option_models_match_the_algorithm_configs_and_admit_their_presets(index):
    options, config, presets = _algorithms()[index]
    assert set(options.model_fields) == {f.name for f in dataclasses.fields(config)} - {"steps"}
    for preset in presets.values():  # a preset the API could not express would be a drift
        values = {k: v for k, v in dataclasses.asdict(preset).items() if k != "steps"}
        options.model_validate(values)


def test_reward_sources_match_the_registry():
    from models.rewards import REWARDS
    from models.worlds import WORLDS

    assert tuple(REWARDS) == bp.REWARD_SOURCES
    assert set(bp.WORLDS) == set(WORLDS)


def test_pipeline_overrides_are_valid_options():
    from models.pipeline import PRESETS

    for p in PRESETS.values():
        bp.RFTOptions.model_validate(p.rft_options)
        bp.RLOptions.model_validate({"tasks": p.tasks, **p.rl_options})
        bp.RLOptions.model_validate({"tasks": p.tasks, **p.wm_rl_options})


def test_the_rft_command_has_a_flag_for_every_option():
    command = typer.main.get_command(_app())
    flags = {opt for param in command.params for opt in getattr(param, "opts", ())}
    for model in (bp.RFTOptions, bp.RLOptions):
        for name in model.model_fields:
            assert "--" + name.replace("_", "-") in flags, name


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("rft")(rft)
    return app
