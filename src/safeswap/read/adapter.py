"""A PEFT LoRA adapter as an expert: W = W_base + scale * B A, read row chunk by row chunk, never whole.

Many published experts are LoRA adapters, not full checkpoints. An adapter folder
(adapter_config.json + adapter_model.safetensors) given as --safety or --language is
read here as a checkpoint over the base: a tensor without an adapter is the base's
tensor, byte for byte; a tensor with one is computed per row chunk in float32 as
W_base + scale * B[rows] A and rounded once to the stored dtype, which is what PEFT's
merge_and_unload gives up to that one rounding. No full expert exists in memory or on
disk. The analysis needs no B A at all: ||scale * B A||_F^2 = scale^2 * sum((B^T B) * (A A^T)),
an r x r computation per tensor.

Every PEFT feature this does not implement is refused by name, never ignored.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from safeswap.errors import SafeswapError
from safeswap.read.adapter_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_against_factors, module_scale, read_config
from safeswap.read.architecture import vocab_size
from safeswap.read.checkpoint import DTYPES, TORCH_TO_SAFETENSORS, Checkpoint, TensorInfo
from safeswap.read.header import read_header
from safeswap.read.shards import model_file

_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[\w-]+)?\.weight$")


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file() and not (Path(folder) / "config.json").is_file()



class LoraAdapter:
    """The adapter's factors by target tensor name, in float32, with their scale."""

    def __init__(self, folder: Path, role: str):
        self.folder = Path(folder)
        self.config = read_config(self.folder)
        weights = model_file(self.folder, ADAPTER_WEIGHTS)
        if weights is None:
            pickled = self.folder / "adapter_model.bin"
            hint = " (only adapter_model.bin, a pickle, which safeswap never loads)" if pickled.exists() else ""
            raise SafeswapError(f"{role} adapter: {self.folder} has no {ADAPTER_WEIGHTS}{hint}")
        self.factors = self._factors(weights)

    def _factors(self, path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        from safetensors.torch import load_file

        read_header(path)  # the format's checks before the library reads it
        parts: dict[str, dict[str, torch.Tensor]] = {}
        stored: set[str] = set()
        for key, tensor in load_file(str(path)).items():
            match = _KEY.match(key)
            if match is None:
                raise SafeswapError(f"{path}: tensor {key!r} is not a LoRA factor (lora_A/lora_B of a linear layer); "
                                    "embedding adapters, DoRA magnitudes and saved modules are not supported")
            if TORCH_TO_SAFETENSORS.get(tensor.dtype) not in ("F32", "F16", "BF16"):
                raise SafeswapError(f"{path}: tensor {key!r} is stored as {tensor.dtype}; LoRA factors must be "
                                    "float32, float16 or bfloat16")
            stored.add(TORCH_TO_SAFETENSORS[tensor.dtype])
            parts.setdefault(match["module"], {})[match["part"]] = tensor.float()
        # The factors' stored dtype: what an adapter written from this merge keeps by default.
        self.dtype = stored.pop() if len(stored) == 1 else "F32"  # float32 holds either of two narrower dtypes
        factors = {}
        for module, ab in parts.items():
            name = module + ".weight"
            if set(ab) != {"A", "B"}:
                raise SafeswapError(f"{path}: {name} has lora_{''.join(sorted(set('AB') - set(ab)))} missing")
            a, b = ab["A"], ab["B"]
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise SafeswapError(f"{path}: {name} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, which do not chain")
            factors[name] = (a, b, module_scale(self.config, module))
        return factors

    def delta_norm(self, name: str) -> float:
        """||scale * B A||_F from r x r products, in float64; 0 for a tensor without an adapter."""
        if name not in self.factors:
            return 0.0
        a, b, scale = self.factors[name]
        a, b = a.double(), b.double()
        return abs(scale) * math.sqrt(max(0.0, float(((b.T @ b) * (a @ a.T)).sum())))

    def dot_rows(self, name: str, first: int, rows: int, update: torch.Tensor) -> float:
        """<scale * B[rows] A, update> for rows of another expert's float32 update W - W_base, without forming B A."""
        if name not in self.factors:
            return 0.0
        a, b, scale = self.factors[name]
        return scale * float(((update @ a.T) * b[first:first + rows]).sum())

    def dot(self, other: "LoraAdapter", name: str) -> float:
        """<s B A, s' B' A'> = s s' sum((B^T B') * (A A'^T)): an r x r' computation."""
        if name not in self.factors or name not in other.factors:
            return 0.0
        (a, b, s), (a2, b2, s2) = self.factors[name], other.factors[name]
        return s * s2 * float(((b.double().T @ b2.double()) * (a.double() @ a2.double().T)).sum())

    def delta_rows(self, name: str, first: int, rows: int) -> torch.Tensor:
        """scale * B[first:first+rows] A, float32."""
        a, b, scale = self.factors[name]
        return (b[first:first + rows] @ a).mul_(scale)


class AdapterCheckpoint:
    """A checkpoint whose tensors are the base's plus an adapter's deltas (the interface of read.checkpoint.Checkpoint)."""

    def __init__(self, folder: str | Path, base: Checkpoint, role: str):
        self.folder = Path(folder)
        self.role = role
        self.base = base
        self.adapter = LoraAdapter(self.folder, role)
        self.config = base.config
        self.tensors: dict[str, TensorInfo] = base.tensors
        for name, (a, b, _) in self.adapter.factors.items():
            info = base.tensors.get(name)
            if info is None:
                raise SafeswapError(f"{role} adapter: it adapts {name}, which the base model does not have")
            if info.shape != (b.shape[0], a.shape[1]):
                raise SafeswapError(f"{role} adapter: {name} is {list(info.shape)} in the base, "
                                    f"but the adapter's B A is {[b.shape[0], a.shape[1]]}")
            if info.dtype not in ("F32", "F16", "BF16"):
                raise SafeswapError(f"{role} adapter: {name} is stored as {info.dtype} in the base; adapters need float weights")
        modules = [n[: -len(".weight")] for n in base.ordered_names()
                   if n.endswith(".weight") and len(base.tensors[n].shape) == 2]
        factors = self.adapter.factors
        ranks = {m: factors[m + ".weight"][0].shape[0] for m in modules if m + ".weight" in factors}  # base order
        check_against_factors(self.adapter.config, ranks, modules, set(linear_modules(base, modules)), role)

    @property
    def architecture(self) -> str | None:
        return self.base.architecture

    def ordered_names(self) -> list[str]:
        return self.base.ordered_names()

    def side_file(self, name: str) -> Path | None:
        """A tokenizer or config file: the adapter folder's own copy when it has one, else the base's."""
        return model_file(self.folder, name) or self.base.side_file(name)

    def read_raw(self, name: str, first_row: int = 0, rows: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Stored bytes of rows of W_base + scale * B A, rounded once to the base's dtype."""
        if name not in self.adapter.factors:
            return self.base.read_raw(name, first_row, rows, out)
        info = self.tensors[name]
        if rows is None:
            rows = info.shape[0] - first_row
        stored = self.base.read(name, first_row, rows, out)
        merged = stored.float().add_(self.adapter.delta_rows(name, first_row, rows))
        stored.copy_(merged)  # the one rounding, in place in the caller's buffer
        return stored.view(torch.uint8).reshape(-1)

    def read(self, name: str, first_row: int = 0, rows: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        info = self.tensors[name]
        tensor = self.read_raw(name, first_row, rows, out).view(DTYPES[info.dtype][0])
        return tensor.reshape((-1,) + info.shape[1:]) if info.shape else tensor.reshape(())

    def close(self) -> None:
        """The base is closed by its own owner."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def linear_modules(base: Checkpoint, modules: list[str]) -> list[str]:
    """What PEFT's "all-linear" adapts: the 2-D weights but the input embedding and the output head
    (the two whose rows are the vocabulary)."""
    vocab = vocab_size(base.config)
    return [m for m in modules if base.tensors[m + ".weight"].shape[0] != vocab]


def check_adapter_base(folder: Path, base_ref: str, base_folder: Path, role: str) -> None:
    """Refuse an adapter trained on another base, where its base_model_name_or_path lets that be checked:
    a local folder (compared by content fingerprint) or a hub id against a hub id given as --base."""
    from safeswap.read.fingerprint import fingerprint_folder

    named = read_config(folder).get("base_model_name_or_path")
    if not isinstance(named, str) or not named:
        return
    local = Path(named).expanduser()
    if local.is_dir() and (local / "config.json").is_file():
        if local.resolve() != Path(base_folder).resolve() and fingerprint_folder(local) != fingerprint_folder(base_folder):
            raise SafeswapError(f"{role} adapter was trained on {named}, whose weights differ from --base {base_ref}")
        return
    if not Path(base_ref).expanduser().exists() and "/" in named and named != base_ref:
        raise SafeswapError(f"{role} adapter was trained on {named}, but --base is {base_ref}")
