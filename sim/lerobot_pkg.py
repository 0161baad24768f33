"""Loads the `lerobot-dataset` package (module `ledataset`), the reader and writer of LeRobot datasets.

The package imports torchvision at module level, for `transforms.ToTensor` (image features read through
`__getitem__`) and its legacy video decoder. The only torchvision on PyPI is built against CUDA torch and cannot
load beside the studio's CPU torch, so when torchvision is missing or broken a small stand-in module is
registered first. The studio never calls those two paths: it reads the tables through `hf_dataset` and decodes
the videos with PyAV (the package's own video dependency), so the stand-in only lets the import succeed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
from typing import Any

from sim.errors import InputError

PACKAGE = "lerobot-dataset==0.4.4"
INSTALL_HINT = f"pip install --no-deps {PACKAGE} (see the README's set-up)"


class LeRobotMissingError(InputError):
    """The optional LeRobot reader is not installed."""


def _torchvision_stand_in() -> bool:
    """Registers the stand-in when torchvision cannot be imported; True when it did."""
    try:
        import torchvision  # noqa: F401

        return False
    except Exception:  # a CUDA build beside CPU torch fails with RuntimeError or OSError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

    def module(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        sys.modules[name] = m
        return m

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise LeRobotMissingError("torchvision is not usable with this torch; the studio decodes videos with PyAV")

    tv, transforms, io = module("torchvision"), module("torchvision.transforms"), module("torchvision.io")
    transforms.ToTensor = unavailable
    tv.transforms, tv.io = transforms, io
    tv.set_video_backend = unavailable
    tv.__version__ = "0+stand-in"
    return True


def _drop_stand_in() -> None:
    """The package keeps its references; the rest of the process (transformers, datasets) must not see it."""
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        if getattr(sys.modules[name], "__spec__", None) is not None and sys.modules[name].__spec__.loader is None:
            del sys.modules[name]


def lerobot() -> types.SimpleNamespace:
    """The package's dataset classes; a one-line error when it is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub
    if importlib.util.find_spec("ledataset") is None:
        raise LeRobotMissingError(f"the LeRobot dataset reader is not installed: {INSTALL_HINT}")
    stand_in = _torchvision_stand_in()
    try:
        mod = importlib.import_module("ledataset.datasets.lerobot_dataset")
    except ImportError as exc:
        raise LeRobotMissingError(f"the LeRobot dataset reader cannot be imported ({exc}): {INSTALL_HINT}") from exc
    finally:
        if stand_in:
            _drop_stand_in()
    return types.SimpleNamespace(
        LeRobotDataset=mod.LeRobotDataset, LeRobotDatasetMetadata=mod.LeRobotDatasetMetadata,
        CODEBASE_VERSION=getattr(mod, "CODEBASE_VERSION", "v3.0"),
    )
