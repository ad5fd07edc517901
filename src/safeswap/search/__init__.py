"""`safeswap search`: find the merge that is safe in the target language without refusing everything.

space (the YAML search space), splits (search / held-out), probe (generation-free refusal score),
objectives (scores, constraints, Pareto front, recommendation), candidates, runner (one candidate),
study (Optuna, resumable), executors (in-process, process pool, Ray), outputs, run (the whole search), cli.
Optuna ([search]) and Ray ([ray]) are imported only when used.
"""
