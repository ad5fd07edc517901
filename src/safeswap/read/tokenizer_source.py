"""Which folder a model's tokenizer is loaded from: its own when it holds one, else the base model's.

The merge's rule for side files, written once for every command that loads a model to run it
(the search's probe, its generation stage and final evaluation, `safeswap eval`). An expert
saved the way PEFT users save one (`merge_and_unload().save_pretrained(DIR)`) holds weights
and configs but no tokenizer; it was fine-tuned from the base, whose tokenizer it shares
(the merge refuses differing vocabulary sizes), so the base's files are the right ones.
A folder is taken whole, never file by file: a tokenizer.json of one model with the
tokenizer_config.json of another is no tokenizer at all.
"""

from __future__ import annotations

from pathlib import Path

from safeswap.errors import SafeswapError
from safeswap.read.shards import model_file

# Any one of these defines a tokenizer's vocabulary (fast, SentencePiece, byte-level BPE);
# the other tokenizer files only configure one.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def holds_tokenizer(folder: str | Path) -> bool:
    """Whether a model folder has a tokenizer of its own (a vocabulary file, through the containment rule)."""
    return any(model_file(Path(folder), name) is not None for name in VOCABULARY_FILES)


def tokenizer_source(model: str | Path, base: str | Path | None = None, what: str = "model") -> str:
    """The folder (or hub id) to load `model`'s tokenizer from: the model's own folder when it holds a
    tokenizer, else the base's; a hub id is returned as is (the hub repo brings its tokenizer).

    Refuses in one line when neither has one, naming the files looked for."""
    folder = Path(model).expanduser()
    if not folder.is_dir() or holds_tokenizer(folder):
        return str(model)
    if base is not None:
        base_folder = Path(base).expanduser()
        if not base_folder.is_dir() or holds_tokenizer(base_folder):
            return str(base)
        raise SafeswapError(f"{what} {folder} has no tokenizer ({', '.join(VOCABULARY_FILES)}), and neither has "
                            f"the base model {base_folder} to take it from")
    raise SafeswapError(f"{what} {folder} has no tokenizer ({', '.join(VOCABULARY_FILES)}); give the folder of "
                        "the model it was fine-tuned from with --tokenizer")
