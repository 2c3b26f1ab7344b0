"""Prompt formatting, answer extraction and matching for the two task kinds.

``math`` (GSM8K style): the answer is the *last number* in the reply (commas and a trailing
period dropped), compared numerically with the gold number; a gold answer in GSM8K's
``... #### 72`` form counts as the number after ``####``.

``choice`` (MMLU / C-Eval style): the answer is an option letter. Extraction, in order: an explicit
``answer is X`` / ``answer: X`` / ``答案是X``, then a reply that is only a letter (``B``, ``(B)``,
``B.``), then the last standalone capital option letter (not the article ``A``), then the one option whose *text* the
reply contains (models that answer with the option's words instead of its letter).
"""

from __future__ import annotations

import math
import re

LETTERS = "ABCDEFGHIJ"

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def math_prompt(question: str) -> str:
    return f"{question.strip()}\nSolve step by step, then give the final answer as a number on the last line."


def choice_prompt(question: str, options: list[str]) -> str:
    lines = [question.strip(), *(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))]
    return "\n".join(lines) + "\nAnswer with the letter of the correct option."


def gold_number(answer: str) -> float | None:
    """The gold number of a math item: after ``####`` when present, else the whole field."""
    text = answer.split("####")[-1] if "####" in answer else answer
    return parse_number(text.strip())


def parse_number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", "").strip().rstrip("."))
    except ValueError:
        return None


def extract_number(reply: str) -> float | None:
    """The last number in ``reply`` (``1,234.5`` -> 1234.5), or None."""
    found = _NUMBER.findall(reply or "")
    return parse_number(found[-1]) if found else None


def numbers_equal(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-6)


def extract_choice(reply: str, options: list[str]) -> str | None:
    """The option letter ``reply`` chooses, or None (see the module docstring for the order)."""
    letters = LETTERS[: len(options)]
    text = (reply or "").strip()
    explicit = re.findall(rf"(?:answer\s*(?:is|:)|答案\s*(?:是|为|:|：)?)\s*\(?([{letters}])\b", text, re.IGNORECASE)
    if explicit:
        return explicit[-1].upper()
    alone = re.fullmatch(rf"\(?([{letters}])\)?[.:)]?", text)
    if alone:
        return alone.group(1)
    # a capital letter standing alone, but not the article in "A cat ..."
    standalone = re.findall(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z]| [a-z])", text)
    if standalone:
        return standalone[-1]
    lowered = text.lower()
    named = [letters[i] for i, o in enumerate(options) if o.strip() and o.strip().lower() in lowered]
    return named[0] if len(named) == 1 else None
