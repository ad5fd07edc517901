"""Open the input checkpoints (base, safety and one or more language experts) and check, before any work, that they can be merged."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from safeswap.read.architecture import (Family, TensorRole, check_config_describes_tensors, check_config_types, classify,
                                        config_value, family_for, num_layers, vocab_size)
from safeswap.read.adapter import AdapterCheckpoint, check_adapter_base, is_adapter_folder
from safeswap.read.checkpoint import Checkpoint
from safeswap.errors import SafeswapError
from safeswap.read.content_id import fingerprint_of, folder_identity
from safeswap.read.shards import SIDE_FILES
from safeswap.read.sources import resolve_model

ROLES = ("base", "safety", "language")


def fingerprint(ckpt: Checkpoint | AdapterCheckpoint) -> str:
    """The model's content fingerprint (safeswap.read.content_id), as recorded in plans and results."""
    return identity(ckpt)["fingerprint"]


def identity(ckpt: Checkpoint | AdapterCheckpoint, files: dict | None = None, base_files: dict | None = None,
             compute: bool = True) -> dict:
    """{"fingerprint", "files": {name: {size, sha256}}} of an opened model, from `files` (and, for an
    adapter, `base_files`) when given (the hasher's result), else from its folder (content_id).

    With compute=False nothing is read: a sha256 not known from the cache is None, and so is the
    fingerprint over it."""
    files = files if files is not None else folder_identity(ckpt.folder, compute)
    if not isinstance(ckpt, AdapterCheckpoint):
        return {"fingerprint": fingerprint_of(files), "files": files}
    base = identity(ckpt.base, base_files, compute=compute)["fingerprint"]
    return {"fingerprint": None if base is None else fingerprint_of(files, base), "files": files}


@dataclass
class Inputs:
    """The merge's input checkpoints by role, their family and every tensor's role."""

    models: dict[str, Checkpoint]
    family: Family
    roles: dict[str, TensorRole] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    receiver_key: str = "language"

    @property
    def base(self) -> Checkpoint:
        return self.models["base"]

    @property
    def receiver(self) -> Checkpoint:
        """The model whose config, norms and tokenizer the output keeps."""
        return self.models[self.receiver_key]

    @property
    def num_layers(self) -> int:
        return num_layers(self.receiver.config)

    def tensor_names(self) -> list[str]:
        """Every tensor, in the receiver's storage order."""
        return self.receiver.ordered_names()

    def folders(self) -> list[tuple[str, Path]]:
        """(role, folder) of every input, for the checks that keep outputs away from them."""
        return [(role, m.folder) for role, m in self.models.items()]

    def close(self) -> None:
        for m in self.models.values():
            m.close()


def open_inputs(refs: dict[str, str | os.PathLike], revision: str | None = None, receiver: str = "language") -> Inputs:
    """Resolve (local or hub), open and pre-flight check the models named in refs."""
    for role, ref in refs.items():
        if ref is None:
            raise SafeswapError(f"no {role} model given")
    folders = {role: resolve_model(ref, role, revision) for role, ref in refs.items()}
    if "base" in folders and is_adapter_folder(folders["base"]):
        raise SafeswapError(f"base model: {folders['base']} is a LoRA adapter; the base must be a full checkpoint")
    models = {"base": Checkpoint(folders["base"], "base")} if "base" in folders else {}
    for role, folder in folders.items():
        if role == "base":
            continue
        if is_adapter_folder(folder):
            if "base" not in models:
                raise SafeswapError(f"{role} model: {folder} is a LoRA adapter, which needs --base")
            check_adapter_base(folder, str(refs["base"]), models["base"].folder, role)
            models[role] = AdapterCheckpoint(folder, models["base"], role)
        else:
            models[role] = Checkpoint(folder, role)
    models = {role: models[role] for role in refs}
    inputs = Inputs(models, None, refs={r: str(v) for r, v in refs.items()}, receiver_key=receiver)  # type: ignore[arg-type]
    preflight(inputs)
    inputs.family = family_for(inputs.receiver.architecture)
    inputs.roles = {name: classify(inputs.family, name) for name in inputs.tensor_names()}
    return inputs


def preflight(inputs: Inputs) -> None:
    """Same architecture, sizes, tensor names, shapes and dtypes in every model.

    The first mismatch is reported in one line naming the tensor (or setting)
    and both values.
    """
    models = list(inputs.models.values())
    ref = inputs.receiver
    for m in models:
        family_for(m.architecture, m.role)
        check_config_types(m.config, m.role)
        for name in SIDE_FILES:  # refuse a symlink out of the folder now, not after the merge
            m.side_file(name)
    for m in models:
        if m.architecture != ref.architecture:
            raise SafeswapError(
                f"architectures differ: {ref.role} is {ref.architecture}, {m.role} is {m.architecture}"
            )
    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        for m in models:
            a, b = config_value(ref.config, key), config_value(m.config, key)
            if a != b:
                raise SafeswapError(f"{key} differs: {ref.role} has {a}, {m.role} has {b}")
    for m in models:
        a, b = vocab_size(ref.config), vocab_size(m.config)
        if a != b:
            raise SafeswapError(
                f"vocabulary sizes differ: {ref.role} has {a}, {m.role} has {b} "
                "(an expert with an extended tokenizer cannot be merged tensor by tensor)"
            )
    for m in models:
        if m is ref:
            continue
        for name in ref.ordered_names():
            if name not in m.tensors:
                raise SafeswapError(f"tensor {name} is in the {ref.role} model but missing from the {m.role} model")
        for name in m.ordered_names():
            if name not in ref.tensors:
                raise SafeswapError(f"tensor {name} is in the {m.role} model but missing from the {ref.role} model")
        for name in ref.ordered_names():
            a, b = ref.tensors[name], m.tensors[name]
            if a.shape != b.shape:
                raise SafeswapError(
                    f"tensor {name} has shape {list(a.shape)} in the {ref.role} model "
                    f"and {list(b.shape)} in the {m.role} model"
                )
            if a.dtype != b.dtype:
                raise SafeswapError(f"tensor {name} is {a.dtype} in the {ref.role} model and {b.dtype} in the {m.role} model")
    # Last: the models agree with each other; now each config must describe its own tensors.
    for m in models:
        if not isinstance(m, AdapterCheckpoint):  # an adapter's config is its base's (read.adapter checks its factors)
            check_config_describes_tensors(family_for(m.architecture), m.config, {n: t.shape for n, t in m.tensors.items()},
                                           m.role)
