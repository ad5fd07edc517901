"""Language measures: in-language detection by script and function words, held-out perplexity."""

import math

import pytest
from tiny import make_model

from safeswap.demo.language import (
    in_language_rate,
    is_in_language,
    kept_language_gain,
    latin_language,
    load_for_inference,
    measure_language,
    script_shares,
)
from safeswap.errors import SafeswapError

ANSWERS = {
    "en": "You can bake bread at home with flour, water and yeast, and it is easy.",
    "ko": "집에서 밀가루와 물, 효모로 빵을 구울 수 있습니다.",
    "zh": "你可以在家里用面粉、水和酵母烤面包。",
    "it": "Puoi fare il pane a casa con la farina, l'acqua e il lievito, ed è facile.",
    "vi": "Bạn có thể nướng bánh mì ở nhà với bột mì, nước và men.",
    "ar": "يمكنك خبز الخبز في المنزل باستخدام الدقيق والماء والخميرة.",
    "th": "คุณสามารถอบขนมปังที่บ้านด้วยแป้ง น้ำ และยีสต์",
    "bn": "আপনি ময়দা, জল এবং খামির দিয়ে বাড়িতে রুটি বানাতে পারেন।",
    "sw": "Unaweza kuoka mkate nyumbani kwa unga, maji na hamira, na ni rahisi sana.",
    "jv": "Kowe bisa nggawe roti ing omah karo glepung lan banyu, iku gampang.",
}


@pytest.mark.parametrize("language", sorted(ANSWERS))
def test_each_answer_is_detected_in_its_own_language_only(language):
    assert is_in_language(ANSWERS[language], language)
    others = [code for code in ANSWERS if code != language and is_in_language(ANSWERS[language], code)]
    assert others == []


def test_mixed_answer_counts_by_majority_script():
    assert is_in_language("저는 SmolLM입니다. 도와드릴게요.", "ko")
    assert not is_in_language("I am SmolLM, a helpful assistant. 네.", "ko")


def test_answers_without_evidence_are_not_in_language():
    assert not is_in_language("", "ko")
    assert not is_in_language("12345 !!!", "en")
    assert latin_language("Paris.") is None
    assert not is_in_language("Paris.", "it")


def test_script_shares_sum_to_one():
    shares = script_shares("abc 가나다라")
    assert shares == {"latin": pytest.approx(3 / 7), "hangul": pytest.approx(4 / 7)}


def test_in_language_rate_has_a_wilson_interval():
    result = in_language_rate([ANSWERS["ko"], ANSWERS["ko"], ANSWERS["en"], ""], "ko")
    assert (result["k"], result["n"], result["value"]) == (2, 4, 0.5)
    assert 0.0 < result["low"] < 0.5 < result["high"] < 1.0


def test_kept_language_gain_is_measured_in_log_perplexity():
    assert kept_language_gain(100.0, 10.0, 10.0) == pytest.approx(1.0)
    assert kept_language_gain(100.0, 10.0, 100.0) == pytest.approx(0.0)
    assert kept_language_gain(100.0, 10.0, math.sqrt(1000.0)) == pytest.approx(0.5)


def test_measure_language_on_a_tiny_model(tmp_path):
    model = make_model(tmp_path / "m", layers=2, seed=0)
    texts = ["안녕하세요. 반갑습니다.", "도와드릴 수 없습니다.", "저는 학생입니다."]
    result = measure_language(model, "ko", texts=texts, batch_size=2, show_progress=False)
    assert result["sentences"] == 3 and result["tokens"] > 10
    assert result["perplexity"] == pytest.approx(math.exp(result["nll_per_token"]))
    # an untrained model over a 320-token vocabulary is near uniform
    assert 50 < result["perplexity"] < 1000
    again = measure_language(model, "ko", texts=list(texts), batch_size=3, show_progress=False)
    assert again["perplexity"] == pytest.approx(result["perplexity"], rel=2e-2)


def test_loading_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(SafeswapError, match="not a model checkpoint"):
        load_for_inference(tmp_path)


def test_every_multijail_language_has_a_script_and_latin_ones_function_words():
    """The answer-language table (evaluation/data/answer_language.json) covers MultiJail; the detector needs words
    to tell the Latin-script languages apart."""
    from safeswap.evaluation.answer_language import LATIN_LANGUAGES, script_info
    from safeswap.evaluation.languages import MULTIJAIL_LANGUAGES

    for code in MULTIJAIL_LANGUAGES:
        assert script_info(code)["script"]
    assert set(LATIN_LANGUAGES) == {"en", "it", "vi", "sw", "jv"}
    assert all(script_info(code)["function_words"] for code in LATIN_LANGUAGES)
    with pytest.raises(SafeswapError, match="no script known for language 'xx'"):
        script_info("xx")
