"""Everything a merged folder holds besides its shards: config, generation config, tokenizer, figures, plan, card, manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from safeswap.decide.plan_file import MergePlan
from safeswap.merged_folder import PLAN_FILENAME
from safeswap.read.inputs import Inputs
from safeswap.read.shards import TOKENIZER_FILES
from safeswap.read.tokenizer_source import holds_tokenizer
from safeswap.write.manifest import write_manifest
from safeswap.write.model_card import write_model_card

# safetensors dtype names -> the torch names config.json uses
CONFIG_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def copy_side_files(inputs: Inputs, plan: MergePlan, folder: Path, out_dtype: str | None) -> None:
    """config.json and generation_config.json from the receiver, tokenizer files from plan.tokenizer_from
    (from the base when that model holds no tokenizer).

    Only the files named in read.shards are read, each through the containment rule;
    `auto_map` (remote code) is dropped from the configs.
    """
    config = dict(inputs.receiver.config)
    config.pop("auto_map", None)  # remote code is never carried over
    if out_dtype:
        # transformers 4.56+ reads "dtype" and older versions "torch_dtype": write "dtype" always,
        # and "torch_dtype" too where the receiver had it, so either reader sees the new dtype.
        for key in ("dtype", "torch_dtype"):
            if key in config or key == "dtype":
                config[key] = CONFIG_DTYPES[out_dtype]
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = inputs.receiver.side_file("generation_config.json")
    if gen is not None:
        shutil.copyfile(gen, folder / "generation_config.json")
    copy_tokenizer_files(inputs, plan, folder)


def copy_tokenizer_files(inputs: Inputs, plan: MergePlan, folder: Path) -> None:
    """The tokenizer and chat template of plan.tokenizer_from (an adapter output carries them too)."""
    source = inputs.models[plan.tokenizer_from]
    if not holds_tokenizer(source.folder):  # an expert saved without tokenizer files: its base's (read.tokenizer_source)
        source = inputs.models.get("base", source)
    for name in TOKENIZER_FILES:
        path = source.side_file(name)
        if path is None:
            continue
        if name == "tokenizer_config.json":
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("auto_map", None)
            (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            shutil.copyfile(path, folder / name)


def write_figures(plan: MergePlan, folder: Path) -> None:
    """For unit-based plans: specialization.png (units carrying d), direction.png (units carrying cos:
    direction plans) and decisions.png. matplotlib is imported here, on the merge's side thread, not before
    the analysis can start."""
    from safeswap.decide.plan_figures import unit_figures

    unit_figures(plan.units, plan.num_layers, folder, plan.parameters)


def finish_output(inputs: Inputs, plan: MergePlan, folder: Path, shard_hashes: dict[str, str],
                  input_hashes: dict, out_dtype: str | None, command: str | None) -> None:
    """Configs, tokenizer, plan, model card and manifest, once the shards are written."""
    copy_side_files(inputs, plan, folder, out_dtype)
    plan_path = plan.save(folder / PLAN_FILENAME)
    write_model_card(plan, folder, command)
    plan_sha = hashlib.sha256(plan_path.read_bytes()).hexdigest()
    write_manifest(folder, plan_sha, input_hashes, shard_hashes)
