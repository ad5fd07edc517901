"""Candidates per hour of `safeswap search` on the demo's 135M experts: probe stage and generation stage apart,
in-process, and 1 against 2 Ray workers.

Uses the demo's base model and experts (full weights) from $SAFESWAP_CACHE (or --cache), training
them first when they are missing (as `safeswap demo` does). Each contender is one
`safeswap search` process with its own search folder, the same search space and seed:

  in-process              one candidate at a time in the search process
  ray, 1 worker           a local Ray with 2 CPUs, each candidate asking for both
  ray, 2 workers          a local Ray with 2 CPUs, each candidate asking for one

and prints, from the search's DIR/timings.json, the probe stage (statistics, the base and
experts' probe scores and every candidate's; candidates include the references) as
probe-screened candidates per hour, and the generation stage (the probe's top candidates,
the paper's default and the three models answer `--generate` search-split prompts per set,
48 new tokens, refusal judge) as judged models per hour. The generation stage runs in the
search process whoever ran the trials, so the Ray contenders run the probe stage only.
With --adapters it times instead, in the same run, the probe stage of one in-process search over
the demo's full experts against one over the LoRA adapters they were trained as (the same search
space and seed; candidates are then adapters whose factors are swapped into one loaded base,
nothing merged or written per candidate), and prints both as probe-screened candidates per hour.
Run from the repository root:

  python benchmarks/search_speed.py                   # 6 trials, 16 + 16 probe prompts, top 2 judged on 20 + 20
  python benchmarks/search_speed.py --trials 12 --probe 40 --top 4
  python benchmarks/search_speed.py --adapters        # full experts against their LoRA adapters, probe stage
  python benchmarks/search_speed.py --adapters --recipe quick   # the same on `safeswap demo --quick`'s experts
  python benchmarks/search_speed.py --baseline-src ../landed --no-ray   # this build against another, same run
  python benchmarks/search_speed.py --recipe quick                      # the quick demo's experts (same model)

--baseline-src also times the in-process search from another checkout (its src/ first on
PYTHONPATH), with the same experts, space and seed, so that a change is measured against
the code before it in one run. --recipe quick uses the experts `safeswap demo --quick`
trains (a few minutes): the same 135M model and probe work, weaker experts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ADAPTER_DIR = "adapter"  # where the demo keeps each expert's LoRA adapter (safeswap.demo.train.ADAPTER_DIR)

SPACE = """seed: 0
trials: {trials}
parallel: 2
languages: [ko]
probe: {{harmful: {probe}, benign: {probe}, batch_size: 8, max_length: 192}}
constraints: {{max_benign_refusal_over_language: 0.1, min_kept_language_gain: 0.7}}
generation: {{top: {top}, harmful: {generate}, benign: {generate}, max_new_tokens: 48}}
final: false
methods:
  adaptive: {{tau: {{low: 0.0001, high: 0.01, log: true}}, alpha: {{low: 0.2, high: 0.8}}}}
  linear: {{weight: {{low: 0.2, high: 0.8}}}}
  layer-swap: {{bottom: {{low: 2, high: 10}}, top: {{low: 2, high: 10}}}}
"""


def experts(cache: str | None, recipe: str = "full") -> tuple[Path, Path, Path]:
    """The demo's base and its two experts (full weights; each keeps its LoRA adapter in ADAPTER_DIR/), of the
    demo's recipe (`safeswap demo --quick` builds the quick ones), from the cache or trained now (in a child)."""
    code = ("import json, sys; from safeswap.demo.experts import build_experts; "
            "from safeswap.demo.recipes import RECIPES; "
            "m = build_experts('ko', RECIPES[sys.argv[2]], cache=sys.argv[1] or None, show_progress=False); "
            "print(json.dumps([str(m.base), str(m.safety), str(m.language)]))")
    out = subprocess.run([sys.executable, "-c", code, cache or "", recipe], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"could not prepare the demo's experts:\n{out.stderr[-2000:]}")
    return tuple(Path(p) for p in json.loads(out.stdout.strip().splitlines()[-1]))


def run(label: str, folders, config: Path, out: Path, extra: list[str], env: dict | None = None) -> dict:
    """One `safeswap search` process; its probe stage (and generation stage, when it ran) per hour."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "safeswap.cli", "search", "--base", str(folders[0]), "--safety", str(folders[1]),
           "--language", str(folders[2]), "--config", str(config), "--out", str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "search.json").read_text(encoding="utf-8"))
    times = json.loads((out / "timings.json").read_text(encoding="utf-8"))
    candidates = summary["candidates"]
    probe = times["statistics and input hashes"] + times["probe stage"]
    line = (f"{label:<16} wall {wall:7.1f} s | probe stage {probe:6.1f} s, {candidates:3d} candidates, "
            f"{3600 * candidates / probe:6.1f} per hour")
    if "generation stage" in times:
        judged = len(summary["generation"]["candidates"]) + 3  # and the base and both experts
        line += (f" | generation stage {times['generation stage']:6.1f} s, {judged} models judged, "
                 f"{3600 * judged / times['generation stage']:6.1f} per hour")
    print(line, flush=True)
    return {"label": label, "wall": wall, "probe": probe, "candidates": candidates, "out": out}


def against_baseline(ours: dict, baseline_src: Path, folders, config: Path, work: Path) -> None:
    """The same in-process search from another checkout; its rate beside ours, and whether every candidate
    scored the same (the cached probe scores of each candidate, both runs)."""
    env = {**os.environ, "PYTHONPATH": str((baseline_src / "src").resolve())}
    theirs = run("baseline", folders, config, work / "baseline", [], env)
    ratio = (ours["candidates"] / ours["probe"]) / (theirs["candidates"] / theirs["probe"])
    print(f"\nin-process against the baseline checkout: probe-screened candidates per hour x{ratio:.2f}")
    worst = 0.0
    for path in sorted((ours["out"] / "candidates").glob("*.json")):
        other = theirs["out"] / "candidates" / path.name
        a, b = (json.loads(p.read_text(encoding="utf-8")).get("scores") for p in (path, other))
        if a and b:
            worst = max([worst] + [abs(a[k] - b[k]) for k in a if isinstance(a[k], float) and a[k] == a[k]])
    print(f"largest difference of a candidate's probe score between the two: {worst:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=os.environ.get("SAFESWAP_CACHE"), help="the demo's cache (default: $SAFESWAP_CACHE)")
    ap.add_argument("--work", type=Path, default=Path(".bench-cache/search"))
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--probe", type=int, default=16, help="harmful and benign probe prompts each")
    ap.add_argument("--top", type=int, default=2, help="probe-ranked candidates judged in the generation stage")
    ap.add_argument("--generate", type=int, default=20, help="harmful and benign prompts each answered per model")
    ap.add_argument("--no-ray", action="store_true", help="time the in-process search only")
    ap.add_argument("--adapters", action="store_true",
                    help="probe stage over the full experts against over their LoRA adapters, in-process")
    ap.add_argument("--recipe", choices=("full", "quick"), default="full",
                    help="the demo's experts to use: full (the demo's), or quick (`safeswap demo --quick`'s)")
    ap.add_argument("--baseline-src", type=Path, help="another safeswap checkout to time the in-process search from")
    args = ap.parse_args()

    folders = experts(args.cache, args.recipe)
    args.work.mkdir(parents=True, exist_ok=True)
    config, probe_only = args.work / "search.yaml", args.work / "search-probe-only.yaml"
    config.write_text(SPACE.format(trials=args.trials, probe=args.probe, top=args.top, generate=args.generate),
                      encoding="utf-8")
    probe_only.write_text(SPACE.format(trials=args.trials, probe=args.probe, top=0, generate=args.generate),
                          encoding="utf-8")
    if args.adapters:
        adapters = (folders[0], folders[1] / ADAPTER_DIR, folders[2] / ADAPTER_DIR)
        print(f"experts ({args.recipe} recipe): {folders[1]} and {folders[2]} (full weights), their {ADAPTER_DIR}/ "
              "folders (LoRA)")
        full = run("full experts", folders, probe_only, args.work / "full", [])
        lora = run("LoRA experts", adapters, probe_only, args.work / "lora", [])
        ratio = (lora["candidates"] / lora["probe"]) / (full["candidates"] / full["probe"])
        print(f"\nLoRA experts against full experts: probe-screened candidates per hour x{ratio:.2f}")
        return
    ours = run("in-process", folders, config, args.work / "in-process", [])
    if args.baseline_src:
        against_baseline(ours, args.baseline_src, folders, config, args.work)
    if not args.no_ray:
        one = run("ray, 1 worker", folders, probe_only, args.work / "ray-1",
                  ["--ray-address", "local", "--cpus-per-candidate", "2"])
        two = run("ray, 2 workers", folders, probe_only, args.work / "ray-2",
                  ["--ray-address", "local", "--cpus-per-candidate", "1"])
        ratio = (two["candidates"] / two["probe"]) / (one["candidates"] / one["probe"])
        print(f"\n2 Ray workers against 1: probe-screened candidates per hour x{ratio:.2f}")


if __name__ == "__main__":
    main()
