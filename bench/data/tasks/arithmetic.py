"""Arithmetic: evaluate a short expression; the gold reward is correctness.

Owns the arithmetic task's prompts ("4 7 + 8 =", "3 * 6 ="), its imperfect demonstrations (wrong with
probability `error_rate`, by one of several realistic mistakes) and its gold reward. Numbers are
written one digit per word ("- 1 2" is −12, "4 7" is 47) so each digit is one token. Operands of `+` and
`-` go up to `max_operand`; factors of `*` stay single digits. Knows nothing of models.
See arithmetic.md for the reward's definition and why the task exists.
"""
from __future__ import annotations

import itertools
import math
import random

from bench.data.tasks.base import Task
from bench.data.tasks.common import (
    exact,
    multiple_choice_items,
    require,
    require_int,
    require_probability,
    words_of,
)

DIGITS = tuple(str(d) for d in range(10))
OPERATORS = ("+", "-", "*")
EQUALS = "="

# Gold reward levels (see arithmetic.md).
CORRECT_REWARD = 1.0
WRONG_BASE_REWARD = -0.5  # a well-formed wrong answer earns this plus its digit-match fraction (< 1)
MALFORMED_REWARD = -1.0  # empty, stray words, leading zeros, too many digits (e.g. truncated)

ERROR_KINDS = ("precedence", "off_by_one", "digit_slip", "random")


def evaluate(operands: list[int], operators: list[str], precedence: bool = True) -> int:
    """Value of `operands[0] op operators[0] operands[1] ...`.

    With `precedence`, `*` binds tighter than `+`/`-` (the correct value); without it the
    expression is read left to right (a common mistake the demonstrations make).
    """
    if not precedence:
        value = operands[0]
        for op, x in zip(operators, operands[1:]):
            value = value + x if op == "+" else value - x if op == "-" else value * x
        return value
    # Collapse products first, then sum the signed terms.
    terms = [operands[0]]
    signs = [1]
    for op, x in zip(operators, operands[1:]):
        if op == "*":
            terms[-1] *= x
        else:
            terms.append(x)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms))


def number_to_words(value: int) -> str:
    """-12 -> "- 1 2"."""
    text = " ".join(str(abs(value)))
    return f"- {text}" if value < 0 else text


def parse_number(words: list[str], max_digits: int) -> int | None:
    """The integer a response spells, or None if it is not a well-formed number.

    Well-formed: an optional leading "-", then 1..max_digits digit words, no leading zero
    (except "0" itself), and no "- 0".
    """
    digits = words[1:] if words[:1] == ["-"] else words
    if not 1 <= len(digits) <= max_digits or any(w not in DIGITS for w in digits):
        return None
    if len(digits) > 1 and digits[0] == "0":
        return None
    value = int("".join(digits))
    if words[:1] == ["-"]:
        if value == 0:
            return None
        value = -value
    return value


def digit_match(predicted: int, target: int) -> float:
    """Fraction of right-aligned characters (sign included) that agree, over the longer string.

    E.g. 12 vs 13 -> 1/2; 113 vs 13 -> 2/3; 103 vs 13 -> 1/3; -5 vs 5 -> 1/2.
    Equals 1 only if the numbers are equal.
    """
    a, b = str(predicted)[::-1], str(target)[::-1]
    matches = sum(x == y for x, y in zip(a, b))
    return matches / max(len(a), len(b))


class ArithmeticTask(Task):
    """Prompts like "3 + 4 * 2 =", answers like "1 1"; demonstrations wrong with prob `error_rate`."""

    name = "arithmetic"
    max_response_tokens = 8

    def __init__(
        self,
        min_operands: int = 2,
        max_operands: int = 3,
        operators: tuple[str, ...] | list[str] = OPERATORS,
        error_rate: float = 0.3,
        max_operand: int = 9,
    ) -> None:
        require_int(min_operands, "min_operands", 2)
        require_int(max_operands, "max_operands", min_operands, 4, "from min_operands; prompts must stay short")
        operators = tuple(operators)
        require(
            len(operators) > 0 and set(operators) <= set(OPERATORS),
            "operators",
            f"must be a non-empty subset of {list(OPERATORS)}, got {list(operators)}",
        )
        require_probability(error_rate, "error_rate")
        require_int(max_operand, "max_operand", 9, 99, "operands are written with at most two digits")
        self.max_operand = max_operand
        self.min_operands = min_operands
        self.max_operands = max_operands
        self.operators = operators
        self.error_rate = float(error_rate)
        # The longest correct answer bounds a well-formed one; anything longer is degenerate.
        self.max_answer_digits = len(str(self._largest_value()))
        self.params = {
            "min_operands": min_operands,
            "max_operands": max_operands,
            "operators": list(operators),
            "error_rate": self.error_rate,
            "max_operand": max_operand,
        }

    @property
    def vocabulary(self) -> list[str]:
        return [*DIGITS, *OPERATORS, EQUALS]

    def _ranges(self, operators: list[str]) -> list[int]:
        """How many values each operand may take: a factor of `*` is a digit, any other up to max_operand."""
        n = len(operators) + 1
        multiplied = [(i > 0 and operators[i - 1] == "*") or (i < n - 1 and operators[i] == "*") for i in range(n)]
        return [10 if m else self.max_operand + 1 for m in multiplied]

    def _operator_sequences(self):
        for n in range(self.min_operands, self.max_operands + 1):
            yield from (list(ops) for ops in itertools.product(self.operators, repeat=n - 1))

    def _largest_value(self) -> int:
        """An upper bound on |answer|: every operand at its largest, subtraction counted as addition."""
        return max(evaluate([r - 1 for r in self._ranges(ops)], ["+" if op == "-" else op for op in ops])
                   for ops in self._operator_sequences())

    def prompt_space_size(self) -> int:
        return sum(math.prod(self._ranges(ops)) for ops in self._operator_sequences())

    def sample_prompt(self, rng: random.Random) -> str:
        n = rng.randint(self.min_operands, self.max_operands)
        operators = [rng.choice(self.operators) for _ in range(n - 1)]
        operands = [rng.randrange(r) for r in self._ranges(operators)]
        words = [number_to_words(operands[0])]
        for op, x in zip(operators, operands[1:]):
            words += [op, number_to_words(x)]
        return " ".join([*words, EQUALS])

    def composition_key(self, prompt: str) -> str:
        """The operators and a coarse class of each operand, as parts: the tens digit of an operand of + or -,
        and for a factor of * its value (the first) or its half, 0-4 or 5-9 (the others). E.g. "+|4|0" holds
        out adding a one-digit number to a number in the forties and "*|6|1" multiplying 6 by 5-9, while each
        part is seen in training with other partners."""
        operands, operators = self.parse_prompt(prompt)
        ranges = self._ranges(operators)
        classes = [str(x // 10) if r > 10 else str(x) if i == 0 else str(x // 5)
                   for i, (x, r) in enumerate(zip(operands, ranges))]
        return "|".join([" ".join(operators), *classes])

    def parse_prompt(self, prompt: str) -> tuple[list[int], list[str]]:
        words = words_of(prompt)
        groups, operators, current = [], [], []
        ok = len(words) >= 4 and words[-1] == EQUALS
        for w in words[:-1] if ok else []:
            if w in DIGITS:
                current.append(w)
            elif w in OPERATORS and current:
                groups.append(current)
                operators.append(w)
                current = []
            else:
                ok = False
                break
        ok = ok and bool(current) and bool(operators)
        groups.append(current)
        ok = ok and all(len(g) <= 2 and (len(g) == 1 or g[0] != "0") for g in groups)
        if not ok:
            raise ValueError(f"arithmetic prompt {prompt!r} is not of the form 'n op n ... =' (numbers digit by digit)")
        return [int("".join(g)) for g in groups], operators

    def answer(self, prompt: str) -> int:
        return evaluate(*self.parse_prompt(prompt))

    def wrong_answer(self, prompt: str, rng: random.Random) -> int:
        """A plausible mistake, never the correct value: one of ERROR_KINDS, chosen uniformly."""
        operands, operators = self.parse_prompt(prompt)
        correct = evaluate(operands, operators)
        while True:
            kind = rng.choice(ERROR_KINDS)
            if kind == "precedence":
                value = evaluate(operands, operators, precedence=False)
            elif kind == "off_by_one":
                value = correct + rng.choice((-1, 1))
            elif kind == "digit_slip":
                text = list(str(abs(correct)))
                i = rng.randrange(len(text))
                leading = i == 0 and len(text) > 1  # a leading digit may not become 0
                text[i] = rng.choice([d for d in DIGITS if d != text[i] and not (leading and d == "0")])
                value = int("".join(text)) * (-1 if correct < 0 else 1)
            else:
                value = rng.randint(-9, 99)
            if value != correct:
                return value

    def demonstration(self, prompt: str, rng: random.Random) -> str:
        if rng.random() < self.error_rate:
            return number_to_words(self.wrong_answer(prompt, rng))
        return number_to_words(self.answer(prompt))

    def gold_reward(self, prompt: str, response: str) -> float:
        """1 if correct; −0.5 + digit-match fraction if a wrong number; −1 if not a number."""
        target = self.answer(prompt)
        predicted = parse_number(words_of(response), self.max_answer_digits)
        if predicted is None:
            return MALFORMED_REWARD
        if predicted == target:
            return CORRECT_REWARD
        return exact(WRONG_BASE_REWARD + digit_match(predicted, target))

    def candidate_responses(self, prompt: str, rng: random.Random) -> list[str]:
        """The correct answer and three distinct mistakes (for lm-eval items)."""
        correct = self.answer(prompt)
        wrong: list[int] = []
        while len(wrong) < 3:
            value = self.wrong_answer(prompt, rng)
            if value not in wrong:
                wrong.append(value)
        return [number_to_words(v) for v in (correct, *wrong)]

    def multiple_choice_items(self, rng: random.Random, n: int) -> list[dict]:
        return multiple_choice_items(self.gold_reward, self.sample_prompt, self.candidate_responses, rng, n)
