"""The search / held-out split: disjoint, complete, reproducible from the seed, independent of the file's order."""

from safeswap.evaluation.multijail import load_bundled
from safeswap.search.splits import load_benign_asset, pick, split_ids, split_record


def test_split_is_disjoint_complete_and_seeded():
    ids = [f"p{i}" for i in range(100)]
    a = split_ids(ids, 0.3, seed=7)
    assert not set(a.search) & set(a.held_out)
    assert set(a.search) | set(a.held_out) == set(ids) and len(a.search) == 30
    assert split_ids(list(reversed(ids)), 0.3, seed=7) == a  # the file's order does not matter
    assert split_ids(ids, 0.3, seed=8) != a


def test_tiny_sets_keep_one_prompt_on_each_side():
    s = split_ids(["a", "b"], 0.9, seed=0)
    assert len(s.search) == 1 and len(s.held_out) == 1


def test_multijail_and_benign_splits_are_disjoint_and_reproducible():
    harmful, benign = load_bundled(), load_benign_asset()
    one = split_record(harmful, benign, 0.5, seed=0)
    assert one == split_record(harmful, benign, 0.5, seed=0)
    for part in ("multijail", "benign"):
        assert not set(one[part]["search"]) & set(one[part]["held_out"])
        assert one[part]["search"] and one[part]["held_out"]
    assert len(one["multijail"]["search"]) + len(one["multijail"]["held_out"]) == len(harmful.prompts)
    assert "ko" in benign.languages and len(benign.prompts) == 60


def test_pick_takes_only_its_half():
    harmful = load_bundled()
    split = split_record(harmful, load_benign_asset(), 0.5, seed=0)["multijail"]
    chosen = pick(harmful.prompts, split["search"], 10, seed=0)
    assert len(chosen) == 10 and {p.id for p in chosen} <= set(split["search"])
    assert chosen == pick(harmful.prompts, split["search"], 10, seed=0)
