"""Pick MuJoCo's headless GL backend before anything imports mujoco: EGL, else OSMesa."""

from __future__ import annotations

import ctypes.util
import os


def configure_gl() -> str:
    """Set MUJOCO_GL (unless the user chose one) and return the backend in use."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return chosen
    if ctypes.util.find_library("EGL"):
        backend = "egl"
    elif ctypes.util.find_library("OSMesa"):
        backend = "osmesa"
    else:
        backend = "egl"  # fails later with a message that names the missing packages
    os.environ["MUJOCO_GL"] = backend
    return backend


GL_HELP = (
    "MuJoCo could not open a headless GL context. Install the Debian packages "
    "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 (or libosmesa6 and set MUJOCO_GL=osmesa)."
)
