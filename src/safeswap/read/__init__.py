"""Stage 1, read: a model folder (local or from the hub) -> validated, lazily read tensors. Nothing is decided here."""
