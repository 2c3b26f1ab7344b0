"""Answer extraction: the last number for math, the chosen option letter for multiple choice."""

import pytest

from ascend.evaluate.scoring import extract_choice, extract_number, gold_number, numbers_equal

OPTIONS = ["Berlin", "Madrid", "Paris", "Rome"]


@pytest.mark.parametrize("reply,want", [
    ("3 + 4 = 7, so he has 7 apples.", 7),
    ("Step 1: 5 * 12 = 60\nThe answer is 60.", 60),
    ("She has $1,000 left.", 1000),
    ("It drops to -3.5 degrees", -3.5),
    ("no digits here", None),
    ("", None),
])
def test_last_number(reply, want):
    got = extract_number(reply)
    assert got == want if want is None else numbers_equal(got, want)


def test_gsm8k_gold_is_the_number_after_hashes():
    assert gold_number("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 18") == 18
    assert gold_number("1,250") == 1250
    assert gold_number("about five") is None


@pytest.mark.parametrize("reply,want", [
    ("C", "C"),
    ("(B)", "B"),
    ("The answer is D.", "D"),
    ("答案是 C", "C"),
    ("Answer: a", "A"),
    ("I think it is C, the French capital.", "C"),
    ("A city in France: Paris.", "C"),      # the article "A" is not an answer; the option text is
    ("Paris", "C"),
    ("Hello to you!", None),
    ("Berlin or Madrid", None),             # two option texts: no answer
])
def test_choice(reply, want):
    assert extract_choice(reply, OPTIONS) == want
