"""Training: configuration, optimizers, learning-rate schedule and the training loop."""
