"""Wall time and peak memory of `safeswap merge` against mergekit on a synthetic triple.

Builds once, into a cache folder, a bf16 base / safety / language triple with
TinyLlama-1.1B shapes (or Llama-3.1-8B shapes with --size 8b), two shards each,
then times in one run, each as a separate process with its own peak RSS:

  safeswap merge (analysis + plan + merge, module granularity)
  mergekit-yaml linear merge of the same two experts (mergekit in its own venv)

and prints both figures and the ratios. The same run times the I/O floor: a plain read of
every input byte (page cache warm, as for the tools) and a plain write and fsync of as many
bytes as the output has; each tool's time is printed beside it as a multiple of that floor.
With --profile, each safeswap run also reports its stages (SAFESWAP_PROFILE timestamps:
startup, imports, analysis, decide, write, waits for the output's and the inputs' sha256,
side files, rename, exit) and, apart, the inputs' sha256 alone (the hasher the merge runs in
a child) and a merge given the inputs' sha256 (no input hashing, as a known identity gives).
Run from the repository root:

  python benchmarks/merge_speed.py                 # TinyLlama shapes, ~7 GB of disk
  python benchmarks/merge_speed.py --size 8b       # Llama-3.1-8B shapes, ~64 GB of disk
  python benchmarks/merge_speed.py --size 8b --layers 4   # the same shapes, 4 layers: ~12 GB of disk
  python benchmarks/merge_speed.py --methods adaptive,ties,layer-swap --mergekit-methods linear,ties
  python benchmarks/merge_speed.py --baseline-src ../old-checkout   # this build against another, same run
  python benchmarks/merge_speed.py --adapters 16                    # also with rank-16 LoRA adapters as experts
  python benchmarks/merge_speed.py --profile                        # where safeswap's time goes, stage by stage

--baseline-src times the same safeswap methods from another checkout (its src/ put first
on PYTHONPATH), so a change is measured against the code before it in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    "1b": dict(layers=22, hidden=2048, intermediate=5632, heads=32, kv_heads=4, vocab=32000),
    "8b": dict(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256),
}


def tensor_shapes(s: dict) -> list[tuple[str, tuple[int, ...]]]:
    head_dim = s["hidden"] // s["heads"]
    kv = s["kv_heads"] * head_dim
    shapes = [("model.embed_tokens.weight", (s["vocab"], s["hidden"]))]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (s["hidden"],)),
            (p + "self_attn.q_proj.weight", (s["hidden"], s["hidden"])),
            (p + "self_attn.k_proj.weight", (kv, s["hidden"])),
            (p + "self_attn.v_proj.weight", (kv, s["hidden"])),
            (p + "self_attn.o_proj.weight", (s["hidden"], s["hidden"])),
            (p + "post_attention_layernorm.weight", (s["hidden"],)),
            (p + "mlp.gate_proj.weight", (s["intermediate"], s["hidden"])),
            (p + "mlp.up_proj.weight", (s["intermediate"], s["hidden"])),
            (p + "mlp.down_proj.weight", (s["hidden"], s["intermediate"])),
        ]
    shapes += [("model.norm.weight", (s["hidden"],)), ("lm_head.weight", (s["vocab"], s["hidden"]))]
    return shapes


def config(s: dict) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s["hidden"],
        "intermediate_size": s["intermediate"], "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"], "vocab_size": s["vocab"], "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "dtype": "bfloat16", "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2,
    }


def relative_noise(name: str, role: str, layers: int) -> float:
    """Safety changes middle-layer MLPs, language the outer layers' attention; a little noise elsewhere."""
    if role == "base":
        return 0.0
    layer = int(name.split(".")[2]) if name.startswith("model.layers.") else -1
    middle = layers // 4 <= layer < 3 * layers // 4
    if role == "safety" and middle and ".mlp." in name:
        return 0.05
    if role == "language" and layer >= 0 and not middle and ".self_attn." in name:
        return 0.05
    return 0.005


def build(root: Path, size: str, layers: int | None = None) -> dict[str, Path]:
    """The triple's folders, built first when missing.

    The building runs in a spawned process: this process starts every contender, and a
    child started by vfork is charged the parent's peak RSS, so this one must stay small
    (no torch, no tensors).
    """
    folders = {r: root / r for r in ("base", "safety", "language")}
    if not all((f / "model.safetensors.index.json").exists() for f in folders.values()):
        print(f"building the synthetic {size} triple in {root} (once)...", flush=True)
        child = multiprocessing.get_context("spawn").Process(target=_write_triple, args=(folders, size, layers))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"building the synthetic triple failed (exit code {child.exitcode})")
    return folders


def _write_triple(folders: dict[str, Path], size: str, layers: int | None) -> None:
    import torch
    from safetensors.torch import save_file

    s = dict(SIZES[size])
    if layers:
        s["layers"] = layers
    shapes = tensor_shapes(s)
    total = sum(math.prod(shape) * 2 for _, shape in shapes)
    halves = [[], []]
    acc = 0
    for name, shape in shapes:
        halves[0 if acc < total / 2 else 1].append((name, shape))
        acc += math.prod(shape) * 2
    for role, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        weight_map = {}
        for i, part in enumerate(halves):
            gen = torch.Generator().manual_seed(1000 + i)  # the base: same seed for every role
            noise_gen = torch.Generator().manual_seed({"base": 0, "safety": 1, "language": 2}[role] * 100 + i)
            tensors = {}
            for name, shape in part:
                w = torch.randn(shape, generator=gen) * 0.02
                if "norm" in name:
                    w = 1.0 + w
                scale = relative_noise(name, role, s["layers"])
                if scale:
                    w += torch.randn(shape, generator=noise_gen) * (0.02 * scale)
                tensors[name] = w.to(torch.bfloat16)
            filename = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file(tensors, folder / filename, metadata={"format": "pt"})
            weight_map.update({n: filename for n in tensors})
            del tensors
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "config.json").write_text(json.dumps(config(s), indent=2))
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


ADAPTER_TARGETS = {"safety": ("gate_proj", "up_proj", "down_proj"), "language": ("q_proj", "k_proj", "v_proj", "o_proj")}


def build_adapters(root: Path, base: Path, size: str, layers: int | None, rank: int) -> dict[str, Path]:
    """LoRA adapters (PEFT's file layout) on the triple's base: safety on the MLPs, language on attention."""
    folders = {r: root / f"{r}-lora-r{rank}" for r in ADAPTER_TARGETS}
    if not all((f / "adapter_model.safetensors").exists() for f in folders.values()):
        print(f"building rank-{rank} adapters in {root} (once)...", flush=True)
        child = multiprocessing.get_context("spawn").Process(target=_write_adapters, args=(folders, base, size, layers, rank))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"building the adapters failed (exit code {child.exitcode})")
    return folders


def _write_adapters(folders: dict[str, Path], base: Path, size: str, layers: int | None, rank: int) -> None:
    import torch
    from safetensors.torch import save_file

    s = dict(SIZES[size])
    if layers:
        s["layers"] = layers
    for seed, (role, folder) in enumerate(folders.items()):
        gen = torch.Generator().manual_seed(500 + seed)
        tensors = {}
        for name, shape in tensor_shapes(s):
            if name.startswith("model.layers.") and name.split(".")[-2] in ADAPTER_TARGETS[role]:
                module = name[: -len(".weight")]
                tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn((rank, shape[1]), generator=gen) * 0.01
                tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn((shape[0], rank), generator=gen) * 0.01
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
        config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(ADAPTER_TARGETS[role]),
                  "bias": "none", "base_model_name_or_path": str(base.resolve()), "task_type": "CAUSAL_LM"}
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def run_measured(cmd: list[str], env: dict | None = None, profile: Path | None = None) -> tuple[float, float, float, list]:
    """Wall seconds, peak RSS (GB) and CPU seconds (user + system, its children included) of one child
    process; with `profile`, also its stage marks as (stage, seconds since the previous mark)."""
    if profile is not None:
        profile.unlink(missing_ok=True)
        env = {**(env or os.environ), "SAFESWAP_PROFILE": str(profile)}
    launched = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    stages = []
    if profile is not None and profile.exists():
        previous = launched
        for line in profile.read_text().splitlines():
            stage, at = json.loads(line)
            stages.append((stage, at - previous))
            previous = at
        stages.append(("exit", launched + wall - previous))
    # ru_maxrss is in KiB on Linux; wait4's usage counts the grandchildren it waited for (the input hasher)
    return wall, usage.ru_maxrss / 1024 / 1024, usage.ru_utime + usage.ru_stime, stages


def model_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def io_floor(folders: dict[str, Path], output_bytes: int, scratch: Path) -> dict[str, float]:
    """Seconds to read every input byte (page cache warm, as warm() leaves it) and to write and fsync
    output_bytes: what no merge of these inputs can beat on this machine."""
    warm(folders)
    block = bytearray(1 << 24)
    start = time.perf_counter()
    for folder in folders.values():
        for f in sorted(folder.glob("*.safetensors")):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(block):
                    pass
    read = time.perf_counter() - start
    block[:] = os.urandom(len(block))  # not zeros: no file system may take a shortcut
    path = scratch / "floor.bin"
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as fh:
        left = output_bytes
        while left:
            left -= fh.write(memoryview(block)[: min(left, len(block))])
        written = time.perf_counter()
        os.fsync(fh.fileno())
    done = time.perf_counter()
    path.unlink()
    os.sync()
    return {"read": read, "write": written - start, "fsync": done - written, "floor": done - start + read}


def hashing_cmd(folders: dict[str, Path], path: Path) -> list[str]:
    """The inputs' sha256 as a merge's manifest records them (the hasher the merge runs), written to `path`."""
    code = ("import json, sys; from pathlib import Path; from safeswap.write.hasher import hash_folders; "
            "f = json.loads(sys.argv[1]); Path(sys.argv[2]).write_text(json.dumps(hash_folders({k: Path(v) for k, v in f.items()})))")
    return [sys.executable, "-c", code, json.dumps({k: str(v) for k, v in folders.items()}), str(path)]


def given_hashes_cmd(folders: dict[str, Path], out: Path, hashes: Path) -> list[str]:
    """An adaptive merge through the Python pipeline with the inputs' sha256 given: the merge minus input hashing."""
    code = ("import json, sys; from pathlib import Path; from safeswap.write import pipeline; "
            "a = sys.argv[1:]; s = pipeline.WriteSettings(Path(a[3]), force=True, input_sha256=json.loads(Path(a[4]).read_text())); "
            "pipeline.merge(a[0], a[1], {None: a[2]}, s, recipe=pipeline.Recipe('adaptive', "
            "__import__('safeswap.decide.planning', fromlist=['x']).method_parameters('adaptive', None)))")
    return [sys.executable, "-c", code, str(folders["base"]), str(folders["safety"]), str(folders["language"]),
            str(out), str(hashes)]


def warm(folders: dict[str, Path]) -> None:
    """Read every input once and flush pending writes, so every contender starts alike:
    inputs in the page cache, no earlier run's dirty pages still being written back."""
    os.sync()
    for folder in folders.values():
        for f in folder.glob("*.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def safeswap_cmd(folders, out: Path, method: str) -> list[str]:
    """`safeswap merge` of folders["safety"] and folders["language"] (full checkpoints or adapters)."""
    cmd = [sys.executable, "-m", "safeswap.cli", "merge", "--base", str(folders["base"]), "--safety",
           str(folders["safety"]), "--language", str(folders["language"]), "--out", str(out), "--force"]
    if method == "layer-swap":
        cmd += ["--method", "layer-swap", "--bottom", "4", "--top", "4"]
    elif method != "adaptive":
        cmd += ["--method", method]
    return cmd


def mergekit_cmd(mergekit_bin: Path, folders, out: Path, method: str, work: Path) -> list[str]:
    # The same settings as safeswap's defaults for that method: linear 0.5/0.5; ties weights 1/1, density 0.2.
    weight = 0.5 if method == "linear" else 1.0
    models = [{"model": str(folders[r]), "parameters": {"weight": weight}} for r in ("safety", "language")]
    cfg = {"merge_method": method, "models": models, "dtype": "bfloat16"}
    if method != "linear":
        cfg["base_model"] = str(folders["base"])
        for m in models:
            m["parameters"]["density"] = 0.2
    path = work / f"mergekit-{method}.json"  # JSON is valid YAML
    path.write_text(json.dumps(cfg))
    return [str(mergekit_bin), str(path), str(out), "--out-shard-size", "5B"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--layers", type=int, help="fewer decoder layers than the size has (same tensor shapes, less disk)")
    ap.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    ap.add_argument("--methods", default="adaptive", help="safeswap methods to time, comma-separated")
    ap.add_argument("--mergekit-methods", default="linear", help="mergekit methods to time, comma-separated")
    ap.add_argument("--mergekit-bin", type=Path, default=Path(".venv-mergekit/bin/mergekit-yaml"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender; the best wall time is kept")
    ap.add_argument("--baseline-src", type=Path, help="another safeswap checkout to time the same methods from")
    ap.add_argument("--adapters", type=int, metavar="RANK",
                    help="also time each method with rank-RANK LoRA adapters as the experts (PEFT layout)")
    ap.add_argument("--profile", action="store_true",
                    help="print each safeswap run's stages; also time the inputs' sha256 alone and a merge given them")
    args = ap.parse_args()

    name = args.size + (f"-{args.layers}layers" if args.layers else "")
    folders = build(args.cache / name, args.size, args.layers)
    work = args.cache / f"out-{name}"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    methods = [m for m in args.methods.split(",") if m]
    contenders = [(f"safeswap {m}", safeswap_cmd(folders, work / "out", m), None) for m in methods]
    if args.adapters:
        adapters = build_adapters(args.cache / name, folders["base"], args.size, args.layers, args.adapters)
        lora = {"base": folders["base"], **adapters}
        contenders += [(f"safeswap {m} (LoRA r={args.adapters})", safeswap_cmd(lora, work / "out", m), None) for m in methods]
    if args.baseline_src:
        env = {**os.environ, "PYTHONPATH": str((args.baseline_src / "src").resolve())}
        contenders += [(f"baseline {m}", safeswap_cmd(folders, work / "out", m), env) for m in methods]
    if args.mergekit_bin.exists():
        contenders += [(f"mergekit {m}", mergekit_cmd(args.mergekit_bin, folders, work / "out", m, work), None)
                       for m in args.mergekit_methods.split(",") if m]
    else:
        print(f"mergekit not found at {args.mergekit_bin}; timing safeswap alone", file=sys.stderr)
    if args.profile:
        hashes = work / "input-sha256.json"
        contenders.insert(len(methods), ("inputs' sha256 alone", hashing_cmd(folders, hashes), None))
        contenders.insert(len(methods) + 1, ("adaptive, sha256 given", given_hashes_cmd(folders, work / "out", hashes), None))
    floor = min((io_floor(folders, model_bytes(folders["language"]), work) for _ in range(args.repeat)),
                key=lambda f: f["floor"])
    print(f"{'I/O floor':<24} wall {floor['floor']:7.1f} s   (read the inputs {floor['read']:.1f} s, write the output's "
          f"{model_bytes(folders['language']) / 1e9:.1f} GB {floor['write']:.1f} s, fsync {floor['fsync']:.1f} s)", flush=True)
    for label, cmd, env in contenders:
        best = None
        for _ in range(args.repeat):
            shutil.rmtree(work / "out", ignore_errors=True)
            warm(folders)
            profiled = args.profile and (label.startswith(("safeswap", "baseline", "adaptive")))
            run = run_measured(cmd, env, work / "profile.jsonl" if profiled else None)
            best = run if best is None or run[0] < best[0] else best
        wall, rss, cpu, stages = best
        results.append((label, wall, rss))
        print(f"{label:<24} wall {wall:7.1f} s   peak RSS {rss:5.2f} GB   CPU {cpu:5.1f} s   "
              f"x{wall / floor['floor']:.2f} of the I/O floor", flush=True)
        if stages:
            print("    " + ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in stages), flush=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    by_label = {label: (wall, rss) for label, wall, rss in results}
    baseline = by_label.get("mergekit linear")
    if baseline:
        print(f"\nratios against mergekit linear ({baseline[0]:.1f} s, {baseline[1]:.2f} GB):")
        for label, wall, rss in results:
            print(f"  {label:<24} time x{wall / baseline[0]:.2f}   memory x{rss / baseline[1]:.2f}")
    same = [(m, by_label[f"safeswap {m}"], by_label[f"mergekit {m}"]) for m in ("ties", "linear", "task_arithmetic")
            if f"safeswap {m}" in by_label and f"mergekit {m}" in by_label]
    for method, ours, theirs in same:
        print(f"safeswap {method} against mergekit {method}: time x{ours[0] / theirs[0]:.2f}   memory x{ours[1] / theirs[1]:.2f}")
    for m in methods:
        lora = f"safeswap {m} (LoRA r={args.adapters})"
        if lora in by_label:
            ours, full = by_label[lora], by_label[f"safeswap {m}"]
            print(f"{lora} against full experts: time x{ours[0] / full[0]:.2f}   memory x{ours[1] / full[1]:.2f}")
        if f"baseline {m}" in by_label:
            ours, theirs = by_label[f"safeswap {m}"], by_label[f"baseline {m}"]
            print(f"safeswap {m} against the baseline checkout: time x{ours[0] / theirs[0]:.2f}   memory x{ours[1] / theirs[1]:.2f}")


if __name__ == "__main__":
    main()
