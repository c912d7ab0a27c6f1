"""Evaluation: bits per byte, multiple choice, generative tasks, the lm-eval adapter and the report card."""
