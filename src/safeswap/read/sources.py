"""Turn a user's model reference (local folder or Hugging Face repo id) into a local folder."""

from __future__ import annotations

import re
from pathlib import Path

from safeswap.errors import SafeswapError

# Only what a merge needs: weights, JSON configs, tokenizer and chat-template files.
# Remote code (*.py) and pickles are never fetched.
HUB_PATTERNS = [
    "*.safetensors",
    "*.json",
    "tokenizer.model",
    "*.tiktoken",
    "*.jinja",
    "*.txt",
]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(ref: str | Path, role: str, revision: str | None = None) -> Path:
    """A local folder for `ref`, downloading from the hub when ref is a repo id."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SafeswapError(f"{role} model: {path} is a file; give the model folder")
        return path
    text = str(ref)
    if text.startswith((".", "/", "~")) or not _REPO_ID.match(text):
        raise SafeswapError(f"{role} model: {text} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # hub errors come in many classes; all mean "cannot get it"
        raise SafeswapError(
            f"{role} model: cannot fetch {text!r} from the Hugging Face hub ({e.__class__.__name__}); "
            "check the id and your network, or pass a local folder"
        ) from None
