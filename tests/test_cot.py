"""Chain-of-thought parsing: crafted edge cases and real model output."""

from __future__ import annotations

from phikit.cot import COT_SYSTEM_PROMPT, NO_ANSWER_NOTE, parse_cot, with_cot_prompt


def test_steps_and_answer_are_split():
    r = parse_cot("Step 1: 2 apples plus 3 apples.\nStep 2: that is 5.\nAnswer: 5 apples")
    assert r.answer == "5 apples"
    assert r.reasoning == "Step 1: 2 apples plus 3 apples.\nStep 2: that is 5."
    assert r.note is None


def test_variants_of_the_answer_line():
    assert parse_cot("thinking\n**Answer:** 42").answer == "42"
    assert parse_cot("thinking\nFinal answer: Paris").answer == "Paris"
    assert parse_cot("x\n### answer: yes").answer == "yes"


def test_last_answer_line_wins_and_later_lines_belong_to_it():
    r = parse_cot("Answer: draft\nStep 3: check\nAnswer: 12\nbecause 3*4")
    assert r.answer == "12\nbecause 3*4"
    assert "Answer: draft" in r.reasoning


def test_no_answer_line_means_none_never_invented():
    r = parse_cot("Step 1: I think it is probably 7.")
    assert r.answer is None
    assert r.note == NO_ANSWER_NOTE
    assert r.reasoning == "Step 1: I think it is probably 7."


def test_the_word_answer_inside_a_sentence_does_not_count():
    r = parse_cot("The answer: is not obvious here")
    assert r.answer is None


def test_empty_answer_line():
    assert parse_cot("Step 1: hmm\nAnswer:   ").answer is None


def test_cot_prompt_goes_into_the_system_turn():
    out = with_cot_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}])
    assert out[0]["content"].startswith("Be brief.") and COT_SYSTEM_PROMPT in out[0]["content"]
    assert with_cot_prompt([{"role": "user", "content": "q"}])[0] == {"role": "system", "content": COT_SYSTEM_PROMPT}


def test_cot_on_real_output(llama_llm):
    r = llama_llm.chat("If I have 3 boxes with 4 pens each, how many pens do I have?", cot=True, temperature=0, max_new_tokens=200)
    parsed = parse_cot(r.text)
    assert (r.answer, r.reasoning) == (parsed.answer, parsed.reasoning)
    if r.answer is None:
        assert r.note and "Answer:" not in r.text.split("\n")[-1]
    else:
        assert r.answer in r.text and r.reasoning is not None
