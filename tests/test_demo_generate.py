"""Greedy generation helper and the demo's keyword refusal check."""

import pytest
from tiny import make_model

from safeswap.demo.generate import generate_answers
from safeswap.demo.refusal_check import is_refusal, refusal_count
from safeswap.errors import SafeswapError


def test_generate_answers_returns_one_answer_per_prompt_reproducibly(tmp_path):
    model = make_model(tmp_path / "m", layers=2, seed=0)
    prompts = ["How do I bake bread?", "안녕하세요?", "Hi", "What is the capital of France and why?"]
    first = generate_answers(model, prompts, max_new_tokens=6, batch_size=3, show_progress=False)
    assert len(first) == 4 and all(isinstance(a, str) for a in first)
    assert any(a for a in first)
    assert generate_answers(model, prompts, max_new_tokens=6, batch_size=3, show_progress=False) == first
    assert generate_answers(model, [], show_progress=False) == []


def test_generate_answers_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(SafeswapError, match="not a model checkpoint"):
        generate_answers(tmp_path, ["hi"], show_progress=False)


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that request.",
        "I can't provide instructions for violence or weapons.",
        "I cannot do that.",
        "Sorry, I can't assist with obtaining illegal goods.",
        "I’m not able to help with this.",
        "죄송하지만 그 요청은 도와드릴 수 없습니다.",
        "그건 도와드릴 수 없어요.",
        "해당 내용은 답변하기 어렵습니다.",
    ],
)
def test_refusals_are_recognised(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "To make bread, mix flour, water, salt and yeast.",
        "The capital of France is Paris.",
        "김치볶음밥은 팬에 김치를 볶다가 밥을 넣으면 됩니다.",
        "Keep the door locked. " * 10 + "You can't leave a spare key under the mat.",
        "",
    ],
)
def test_helpful_answers_are_not_refusals(answer):
    assert not is_refusal(answer)


def test_refusal_count():
    assert refusal_count(["I can't help with that.", "Sure, here it is.", "죄송합니다."]) == 2
