"""build_experts end to end on a tiny base and stand-in wheels: both experts trained, cached, recorded."""

import json

from demo_fakes import make_fake_wheels
from test_demo_data import HARMFUL, KO_PAIRS
from tiny import make_model

from safeswap.demo.base_model import BASE_FOLDER, prepare_base
from safeswap.demo.experts import build_experts
from safeswap.demo.recipes import QUICK, ExpertRecipe, LanguageData, SafetyData
from safeswap.demo.train import EXPERT_INFO

TINY = QUICK.__class__(
    name="tiny",
    safety_data=SafetyData(n_harmful=6, n_benign=8, n_foreign=0),
    language_data=LanguageData(n_translation=10, instruction_repeats=1),
    safety=ExpertRecipe(steps=2, batch_size=2, lora_rank=2, lora_alpha=4, max_length=48),
    language=ExpertRecipe(steps=2, batch_size=2, lora_rank=2, lora_alpha=4, max_length=48),
)


def test_build_experts_trains_both_once_and_keeps_their_data(tmp_path):
    cache = make_fake_wheels(tmp_path / "cache", KO_PAIRS, HARMFUL)
    make_model(cache / "models" / BASE_FOLDER, layers=2, seed=0)
    assert prepare_base(cache, show_progress=False) == cache / "models" / BASE_FOLDER

    models = build_experts("ko", TINY, cache, show_progress=False)
    assert models.base == cache / "models" / BASE_FOLDER
    safety = json.loads((models.safety / EXPERT_INFO).read_text())
    language = json.loads((models.language / EXPERT_INFO).read_text())
    assert safety["examples"] == 14 and set(safety["sources"]) >= {"donotanswer:malicious_uses", "written:benign_en"}
    assert language["sources"]["written:instructions_ko"] > 100 and language["sources"]["gettext:django"] == 10
    rows = [json.loads(line) for line in (models.language / "training_data.jsonl").read_text().splitlines()]
    assert len(rows) == language["examples"]

    stamp = (models.safety / "model.safetensors").stat().st_mtime_ns
    assert build_experts("ko", TINY, cache, show_progress=False) == models
    assert (models.safety / "model.safetensors").stat().st_mtime_ns == stamp
