"""Evaluation: MultiJail safety, general ability through lm-eval, shared result files."""
