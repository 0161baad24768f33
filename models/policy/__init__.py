"""The VLA policy: MiniLM instruction + image + proprio → chunks of 8 actions by flow matching.

config.py (dataclasses, presets) · text.py (MiniLM, cached) · vision.py (CNN + keypoints) ·
head.py (flow head, σ-net) · processor.py (normalisation, images) · model.py (VLAPolicy) ·
data.py (in-memory windows) · train.py (train_policy). Checkpoint I/O lives in models/policy_io.py.
"""

from models.policy.config import PRESETS, PolicyConfig, TrainConfig, make_train_config
from models.policy.model import SDESample, VLAPolicy

__all__ = ["PRESETS", "PolicyConfig", "SDESample", "TrainConfig", "VLAPolicy", "make_train_config"]
