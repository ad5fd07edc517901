"""Stage 3, write: plan + checkpoints -> a merged Hugging Face folder, streamed tensor by tensor."""
