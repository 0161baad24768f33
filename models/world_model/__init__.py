"""Action-conditioned world model: frame autoencoder + latent dynamics, trained on MetaWorld episodes.

Public entry points: load_world_model, WorldModel (rollout), train.train_world_model,
evaluate.evaluate_world_model.
"""

from models.world_model.model import WorldModel, load_world_model

__all__ = ["WorldModel", "load_world_model"]
