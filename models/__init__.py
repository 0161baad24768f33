"""Pure PyTorch: world model, VLA policy, rewards, training loops and checkpoints. No web code, no DB."""
