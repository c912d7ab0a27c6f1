"""Reinforcement learning: rewards, advantages and policy losses, rollouts (the stages live in minimind.train)."""
