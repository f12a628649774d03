"""The built-in tasks: gold rewards on hand-made examples, determinism, vocabulary coverage, the
verbosity trap's bias, the real-model constraints task's graded reward and guards, and the registry's
errors."""
from __future__ import annotations

import itertools
import math
import random

import pytest

from bench.data.tasks import (
    ArithmeticTask,
    ConstraintsTask,
    SentimentTask,
    VerbosityTrapTask,
    available_tasks,
    build_task,
)
from bench.data.tasks.arithmetic import digit_match, evaluate, number_to_words, parse_number
from bench.data.tasks.constraints import CONFLICTS, CONSTRAINTS, Spec, parse_instruction, range_score, score_constraint
from bench.models import build_word_tokenizer
from helpers import default_task

# The synthetic tasks (word vocabulary, SFT demonstrations) and every task (with the real-model one).
SYNTHETIC_TASKS = ["arithmetic", "sentiment", "verbosity"]
ALL_TASKS = [*SYNTHETIC_TASKS, "constraints"]


def binomial_tolerance(p: float, n: int, z: float = 4.0) -> float:
    return z * math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------- registry


def test_registry_lists_and_builds_every_task():
    assert available_tasks() == sorted(ALL_TASKS)
    assert isinstance(build_task("arithmetic"), ArithmeticTask)
    assert isinstance(build_task("constraints"), ConstraintsTask)
    assert isinstance(build_task("sentiment"), SentimentTask)
    assert isinstance(build_task("verbosity", length_bias=2.0), VerbosityTrapTask)
    assert build_task("verbosity", length_bias=2.0).length_bias == 2.0


def test_registry_unknown_name_lists_available_tasks():
    with pytest.raises(ValueError, match="arithmetic, constraints, sentiment, verbosity"):
        build_task("nope")


def test_registry_unknown_kwarg_names_the_config_key():
    with pytest.raises(ValueError, match=r"dataset\.task_kwargs\.lenght_bias"):
        build_task("verbosity", lenght_bias=1.0)


@pytest.mark.parametrize(
    "name, kwargs, key",
    [
        ("arithmetic", {"error_rate": 1.5}, "error_rate"),
        ("arithmetic", {"max_operands": 9}, "max_operands"),
        ("arithmetic", {"operators": ["/"]}, "operators"),
        ("sentiment", {"positive_rate": -0.1}, "positive_rate"),
        ("sentiment", {"max_clauses": 7}, "max_clauses"),
        ("verbosity", {"length_bias": -1.0}, "length_bias"),
        ("verbosity", {"min_numbers": 1}, "min_numbers"),
        ("constraints", {"n_constraints": 4}, "n_constraints"),
        ("constraints", {"max_response_tokens": 16}, "max_response_tokens"),
    ],
)
def test_bad_task_values_name_the_config_key(name, kwargs, key):
    with pytest.raises(ValueError, match=rf"dataset\.task_kwargs\.{key}"):
        build_task(name, **kwargs)


# ---------------------------------------------------------------- properties shared by all tasks


@pytest.mark.parametrize("name", ALL_TASKS)
def test_prompts_and_demonstrations_are_deterministic_given_a_seed(name):
    task = build_task(name)
    synthetic = name in SYNTHETIC_TASKS

    def draw(seed):
        rng = random.Random(seed)
        out = []
        for _ in range(50):
            prompt = task.sample_prompt(rng)
            out.append((prompt, task.demonstration(prompt, rng) if synthetic else None))
        return out

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    # multiple_choice_items is deterministic too (lm-eval files must be reproducible).
    assert task.multiple_choice_items(random.Random(3), 20) == task.multiple_choice_items(random.Random(3), 20)


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_vocabulary_covers_every_prompt_demonstration_and_choice(name):
    task = build_task(name)
    vocabulary = task.vocabulary
    assert len(vocabulary) == len(set(vocabulary)), "duplicate words in the vocabulary"
    assert len(vocabulary) <= 96, "keep vocabularies small (a word per token: the tiny model's embedding)"
    allowed = set(vocabulary)
    rng = random.Random(0)
    seen: set[str] = set()
    for _ in range(3000):
        prompt = task.sample_prompt(rng)
        seen.update(prompt.split())
        seen.update(task.demonstration(prompt, rng).split())
    for item in task.multiple_choice_items(rng, 200):
        seen.update(item["query"].split())
        for choice in item["choices"]:
            seen.update(choice.split())
    assert seen <= allowed, f"words outside the vocabulary: {sorted(seen - allowed)}"


@pytest.mark.parametrize("name", SYNTHETIC_TASKS)
def test_prompt_and_demonstration_fit_the_model_context(name):
    task = build_task(name)
    rng = random.Random(1)
    for _ in range(3000):
        prompt = task.sample_prompt(rng)
        demo = task.demonstration(prompt, rng)
        assert 1 <= len(demo.split()) <= task.max_response_tokens, demo
        # BOS + prompt + response cap + EOS must stay within ~40 of the model's 64 positions.
        assert len(prompt.split()) + task.max_response_tokens + 2 <= 40


@pytest.mark.parametrize("name", ALL_TASKS)
def test_gold_reward_is_bounded_for_any_word_sequence(name):
    """Samples can be anything (degenerate, truncated at the cap, unknown tokens): never raise."""
    task = build_task(name)
    rng = random.Random(2)
    if name in SYNTHETIC_TASKS:
        words = [*task.vocabulary, "<unk>"]
    else:  # free text: words, punctuation, quotes, newlines, bullets
        words = ["cats", "Bright", "quiet", ",", ".", "?", "!", '"', "- ", "\n", "Yes", "the", "ÉTÉ", "42", ""]
    for _ in range(2000):
        prompt = task.sample_prompt(rng)
        response = " ".join(rng.choice(words) for _ in range(rng.randint(0, task.max_response_tokens)))
        assert -1.0 <= task.gold_reward(prompt, response) <= 1.0


@pytest.mark.parametrize("name", ALL_TASKS)
def test_multiple_choice_gold_is_the_unique_best_choice(name):
    task = build_task(name)
    items = task.multiple_choice_items(random.Random(4), 100)
    assert len(items) == 100
    golds = set()
    for item in items:
        choices = item["choices"]
        assert len(choices) == len(set(choices)) >= 2
        rewards = [task.gold_reward(item["query"], c) for c in choices]
        best = rewards[item["gold"]]
        assert all(r < best for i, r in enumerate(rewards) if i != item["gold"])
        golds.add(item["gold"])
    assert len(golds) > 1, "choices must be shuffled so the gold index carries no information"


@pytest.mark.parametrize("name", ALL_TASKS)
def test_gold_reward_rejects_a_prompt_from_another_task(name):
    with pytest.raises(ValueError, match="prompt"):
        build_task(name).gold_reward("hello there", "1")


# ---------------------------------------------------------------- arithmetic


def test_evaluate_matches_python_on_many_expressions():
    task = ArithmeticTask(max_operands=4)
    rng = random.Random(0)
    for _ in range(2000):
        prompt = task.sample_prompt(rng)
        expression = prompt.removesuffix(" =")
        assert task.answer(prompt) == eval(expression), prompt  # Python's precedence is the oracle


def test_evaluate_precedence_and_left_to_right():
    assert evaluate([3, 4, 2], ["+", "*"]) == 11
    assert evaluate([3, 4, 2], ["+", "*"], precedence=False) == 14
    assert evaluate([8, 2, 3, 1], ["-", "*", "-"]) == 1


def test_number_words_round_trip():
    for value in [0, 7, 10, -5, -81, 729]:
        assert parse_number(number_to_words(value).split(), 3) == value
    assert number_to_words(-12) == "- 1 2"


@pytest.mark.parametrize(
    "response, expected",
    [
        ("1 1", 1.0),  # 3 + 4 * 2 = 11
        ("1  1", 1.0),  # any whitespace separates words
        ("1 2", -0.5 + 1 / 2),  # one of two digits right
        ("1 4", -0.5 + 1 / 2),  # the left-to-right mistake
        ("- 1 1", -0.5 + 2 / 3),  # "-11" vs "11": two of three characters right
        ("5", -0.5 + 0.0),
        ("", -1.0),
        ("1 1 +", -1.0),  # stray word
        ("0 7", -1.0),  # leading zero
        ("1 1 1 1 1 1 1 1", -1.0),  # truncated at the cap: more digits than any answer has
        ("<unk>", -1.0),
        ("=", -1.0),
    ],
)
def test_arithmetic_gold_reward_by_hand(response, expected):
    assert ArithmeticTask().gold_reward("3 + 4 * 2 =", response) == pytest.approx(expected, abs=1e-6)


def test_arithmetic_gold_reward_negative_answers():
    task = ArithmeticTask()
    assert task.gold_reward("2 - 7 =", "- 5") == 1.0
    assert task.gold_reward("2 - 7 =", "5") == pytest.approx(-0.5 + 1 / 2)
    assert task.gold_reward("2 - 2 =", "- 0") == -1.0


def test_digit_match_by_hand():
    assert digit_match(12, 13) == 0.5
    assert digit_match(113, 13) == pytest.approx(2 / 3)
    assert digit_match(103, 13) == pytest.approx(1 / 3)
    assert digit_match(-5, 5) == 0.5
    assert digit_match(42, 42) == 1.0


def test_arithmetic_demonstrations_are_wrong_at_the_error_rate_and_diverse():
    task = ArithmeticTask(error_rate=0.3)
    rng = random.Random(5)
    n, wrong = 4000, 0
    for _ in range(n):
        prompt = task.sample_prompt(rng)
        reward = task.gold_reward(prompt, task.demonstration(prompt, rng))
        assert reward > -1.0, "demonstrations are always well-formed numbers"
        wrong += reward < 1.0
    assert abs(wrong / n - 0.3) < binomial_tolerance(0.3, n)
    # Mistakes are diverse: many different wrong answers to one prompt.
    mistakes = {ArithmeticTask(error_rate=1.0).demonstration("3 + 4 * 2 =", rng) for _ in range(300)}
    assert "1 1" not in mistakes and "1 4" in mistakes and len(mistakes) >= 10
    assert {ArithmeticTask(error_rate=0.0).demonstration("3 + 4 * 2 =", rng) for _ in range(50)} == {"1 1"}


# ---------------------------------------------------------------- sentiment

FOOD_TASTE = "review food taste"


@pytest.mark.parametrize(
    "response, expected",
    [
        ("the taste was great and it was lovely", 0.35 * 2 + 0.3),  # the best: exactly 1
        ("great lovely taste", 1.0),  # the language is keyword-based
        ("great lovely superb taste", 1.0),  # a third positive word earns nothing
        ("the taste was bad", -0.35 + 0.3),
        ("the taste was great", 0.35 + 0.3),
        ("the chef was great", 0.35),  # on topic but not the asked-for aspect
        ("the plot was great", 0.35 - 0.3),  # another topic's noun
        ("review the taste was great", 0.35 + 0.3 - 0.3),  # echoing the instruction
        ("the taste was great <unk>", 0.35 + 0.3 - 0.3),  # a word outside the language
        ("great great great", 0.35 - 0.3 * (2 + 2)),  # 2 extra uses + 2 adjacent repeats
        ("", -1.0),
        (" ".join(["the"] * 24), -1.0),  # degenerate, truncated at the cap
        # 19 words: 4 positives (capped at 2) + aspect; "the" and "was" used 4 times (1 extra each);
        # rambling 19 - 12 = 7 words: 0.7 + 0.3 - 0.6 - 0.7.
        ("the taste was good and the chef was great and the dish was lovely and the food was fun", -0.3),
    ],
)
def test_sentiment_gold_reward_by_hand(response, expected):
    assert SentimentTask().gold_reward(FOOD_TASTE, response) == pytest.approx(expected, abs=1e-6)


def test_sentiment_demonstrations_are_mixed_in_sentiment():
    from bench.data.tasks.sentiment import NEGATIVE, POSITIVE

    task = SentimentTask(positive_rate=0.5, degenerate_rate=0.0)
    rng = random.Random(6)
    positive = negative = 0
    rewards = []
    for _ in range(3000):
        prompt = task.sample_prompt(rng)
        demo = task.demonstration(prompt, rng)
        positive += sum(w in POSITIVE for w in demo.split())
        negative += sum(w in NEGATIVE for w in demo.split())
        rewards.append(task.gold_reward(prompt, demo))
    n = positive + negative
    assert abs(positive / n - 0.5) < binomial_tolerance(0.5, n)
    assert min(rewards) < -0.5 and max(rewards) == 1.0  # room both ways for preference learning
    all_positive = SentimentTask(positive_rate=1.0, off_topic_rate=0.0, degenerate_rate=0.0)
    assert not any(w in NEGATIVE for w in all_positive.demonstration(FOOD_TASTE, rng).split())


def test_sentiment_degenerate_demonstrations_stutter():
    task = SentimentTask(degenerate_rate=1.0)
    rng = random.Random(7)
    for _ in range(100):
        words = task.demonstration(FOOD_TASTE, rng).split()
        assert words[-1] == words[-2] == words[-3]
        assert task.gold_reward(FOOD_TASTE, " ".join(words)) < 0.5


# ---------------------------------------------------------------- verbosity trap

LARGEST = "largest of 3 7 2"


@pytest.mark.parametrize(
    "response, expected",
    [
        ("7", 1.0),
        ("it is 7", 1.0 - 0.1 * 2),
        ("well i think the answer is 7 you know", 1.0 - 0.1 * 8),
        ("7 7", 1.0 - 0.1),  # a repeated answer is padding
        ("7 or 3", 0.0 - 0.1),  # hedged
        ("3", -0.5),
        ("i think 3", -0.5 - 0.2),
        ("well", -1.0),  # no answer; clipped at -1
        ("", -1.0),
        (" ".join(["well"] * 15 + ["7"]), -0.5),  # truncated at the cap: 1 - 15 * 0.1
    ],
)
def test_verbosity_gold_reward_by_hand(response, expected):
    assert VerbosityTrapTask().gold_reward(LARGEST, response) == pytest.approx(expected, abs=1e-6)


def test_verbosity_label_reward_by_hand():
    task = VerbosityTrapTask(length_bias=1.0)
    assert task.label_reward(LARGEST, "7") == pytest.approx(1.0 + 1.0)
    assert task.label_reward(LARGEST, "it is 7") == pytest.approx(0.8 + 3.0)
    assert task.label_reward(LARGEST, "i think it is 3") == pytest.approx(-0.5 - 0.4 + 5.0)
    no_bias = VerbosityTrapTask(length_bias=0.0)
    assert no_bias.label_reward(LARGEST, "it is 7") == no_bias.gold_reward(LARGEST, "it is 7")


def test_verbosity_padding_never_raises_gold_but_raises_the_label():
    """Length is ignored (or penalised) by gold and rewarded by the annotator, on every demo."""
    from bench.data.tasks.verbosity import PREFIX_PHRASES

    task = VerbosityTrapTask()
    rng = random.Random(8)
    for _ in range(2000):
        prompt = task.sample_prompt(rng)
        demo = task.demonstration(prompt, rng)
        padded = " ".join([*rng.choice(PREFIX_PHRASES), demo])
        assert task.gold_reward(prompt, padded) <= task.gold_reward(prompt, demo)
        assert task.label_reward(prompt, padded) > task.label_reward(prompt, demo)


def test_verbosity_label_prefers_a_long_wrong_answer_to_a_short_right_one():
    task = VerbosityTrapTask()
    short_right, long_wrong = "7", "well i think it is 3 you know"
    assert task.gold_reward(LARGEST, short_right) > task.gold_reward(LARGEST, long_wrong)
    assert task.label_reward(LARGEST, long_wrong) > task.label_reward(LARGEST, short_right)


def test_verbosity_demonstrations_vary_in_length_and_correctness():
    task = VerbosityTrapTask()
    rng = random.Random(9)
    lengths, correct = set(), 0
    n = 3000
    for _ in range(n):
        prompt = task.sample_prompt(rng)
        demo = task.demonstration(prompt, rng)
        lengths.add(len(demo.split()))
        correct += task.answer(prompt) in demo.split()
    assert {1, 2, 3, 5} <= lengths
    # Correct unless wrong (0.25) and not rescued by a hedge (0.1): 0.75 + 0.25 * 0.1.
    assert abs(correct / n - 0.775) < binomial_tolerance(0.775, n)


# ---------------------------------------------------------------- constraints (the real-model task)

CATS = Spec("Write a short paragraph about {topic}.", "cats", (5, 12),
            {"no_commas": None, "keywords": ("bright", "quiet")})
CATS_PROMPT = CATS.instruction()
FIFTY_WORDS = "Cats bright quiet " + " ".join(f"word{i}" for i in range(47))


def test_constraints_prompt_renders_and_parses_back():
    assert CATS_PROMPT == ('Write a short paragraph about cats. Answer in 5 to 12 words. Do not use any commas. '
                           'Include the words "bright" and "quiet".')
    assert parse_instruction(CATS_PROMPT) == CATS
    rng = random.Random(0)
    task = ConstraintsTask()
    for _ in range(300):
        spec = task.sample_spec(rng)
        assert parse_instruction(spec.instruction()) == spec


@pytest.mark.parametrize(
    "response, expected",
    [
        ("Cats are bright and quiet friends.", 1.0),  # 6 words, on topic, no comma, both keywords
        ("Cats are bright, quiet, and calm.", 0.666667),  # commas 1/3: S = (1 + 1 + 1/3 + 1)/4
        ("Dogs are nice.", -0.142857),  # 3 words: length 1 - 2/7; off topic; no keyword: S = 0.4286
        # hits the 48-token cap (words, unbound): S = 0.75, halved; no function word: fluency at its floor 0.1
        (FIFTY_WORDS, -0.925),
        ("cats bright quiet cats bright quiet cats bright quiet", -1.0),  # 4 of 7 3-grams repeat: guard 0
        ("Write a short paragraph about cats bright quiet", -0.2),  # 3 of 5 4-grams echo: S = 1, guard 0.4
        ("", -1.0),
        ("!!! ...", -1.0),  # no word at all
    ],
)
def test_constraints_gold_reward_by_hand(response, expected):
    assert ConstraintsTask().gold_reward(CATS_PROMPT, response) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "kind, value, text, expected",
    [
        ("lowercase", None, "abc DEF", 0.5),
        ("end_mark", "?", "Is it?", 1.0),
        ("end_mark", "?", '"Is it?"', 1.0),  # closing quotes aside
        ("end_mark", "?", "Is it? Yes.", 0.25),
        ("end_mark", "!", "Yes.", 0.0),
        ("quotes", None, '"hi"', 1.0),
        ("quotes", None, '"hi', 0.5),
        ("quotes", None, "hi", 0.0),
        ("start_word", "Yes", "yes it is", 1.0),
        ("start_word", "Yes", "Well yes", 0.0),
        ("sentences", 2, "One. Two.", 1.0),
        ("sentences", 2, "One. Two. Three.", 0.5),
        ("sentences", 2, "One", 0.5),
        ("bullets", 2, "- a\n- b", 1.0),
        ("bullets", 2, "- a", 0.5),
        ("no_commas", None, "a, b, c", 1 / 3),
        ("keywords", ("bright", "quiet"), "a Bright day", 0.5),
    ],
)
def test_constraint_scores_by_hand(kind, value, text, expected):
    from bench.data.tasks.constraints import words_in

    assert score_constraint(kind, value, text, words_in(text)) == pytest.approx(expected)


def test_range_score_falls_to_zero_one_width_outside():
    assert [range_score(n, 5, 12) for n in (5, 12, 4, 13, 19, 30, 0)] == pytest.approx(
        [1.0, 1.0, 1 - 1 / 7, 1 - 1 / 7, 0.0, 0.0, 1 - 5 / 7])


def test_constraints_maximum_is_reachable_for_every_prompt():
    """The reward's maximum (1) is a natural answer: a composition from the sentence bank meets every
    drawn instruction set (so hacking is not needed to score 1, and the lm-eval items have a gold)."""
    task, rng = ConstraintsTask(), random.Random(1)
    for _ in range(1000):
        prompt = task.sample_prompt(rng)
        answer = task.compose(parse_instruction(prompt), rng)
        assert task.gold_reward(prompt, answer) == 1.0, (prompt, answer)


def test_constraints_never_draws_conflicting_instructions_and_covers_every_kind():
    task, rng, seen = ConstraintsTask(n_constraints=3), random.Random(5), set()
    for _ in range(2000):
        spec = task.sample_spec(rng)
        kinds = list(spec.constraints)
        assert len(kinds) == 3
        assert not any(frozenset((a, b)) in CONFLICTS for a in kinds for b in kinds if a != b)
        seen.update(kinds)
    assert seen == set(CONSTRAINTS)
    assert ConstraintsTask(n_constraints=0).sample_spec(rng).constraints == {}


def test_constraints_guards_make_degenerate_answers_lose_to_a_plain_answer():
    """Hacks score below an honest, imperfect answer: stuffing keywords, copying the instruction,
    running past the cap, saying nothing."""
    task = ConstraintsTask()
    honest = task.gold_reward(CATS_PROMPT, "Cats sleep a lot and purr, which is nice.")  # a comma, no keywords
    for hack in ("bright quiet bright quiet bright quiet cats cats", CATS_PROMPT, FIFTY_WORDS, "ok", ""):
        assert task.gold_reward(CATS_PROMPT, hack) < honest, hack


def test_constraints_with_a_chat_template_renders_prompts_and_counts_tokens():
    words = ["<|user|>", "<|assistant|>"]
    tokenizer = build_word_tokenizer(words)
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}<|user|> {{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %} <|assistant|>\n{% endif %}")
    task = ConstraintsTask(max_response_tokens=32)
    task.bind_tokenizer(tokenizer)
    prompt = task.sample_prompt(random.Random(0))
    assert prompt.startswith("<bos><|user|> ") and prompt.endswith("<|assistant|>\n")
    assert task.choice_delimiter == ""
    spec = parse_instruction(prompt)
    assert task.gold_reward(prompt, task.compose(spec, random.Random(0))) == 1.0
    # 32 whitespace tokens in the word-level tokenizer reach the cap: the truncation guard halves S
    capped = " ".join(["cats"] + [f"w{i}" for i in range(31)])
    assert task.guards(prompt, capped)["truncated"] == 0.5
    assert task.guards(prompt, " ".join(capped.split()[:31]))["truncated"] == 1.0


def test_constraints_has_no_vocabulary_or_demonstrations():
    task = ConstraintsTask()
    assert task.requires_pretrained_model
    with pytest.raises(ValueError, match="model=smollm2"):
        task.vocabulary
    with pytest.raises(ValueError, match="sft.steps=0"):
        task.demonstration(CATS_PROMPT, random.Random(0))


# ----------------------------------------------------------------------------- prompt spaces (docs/design.md §5)
@pytest.mark.parametrize("name, size", [("arithmetic", 5100), ("sentiment", 5760), ("verbosity", 111_000)])
def test_default_prompt_spaces_hold_at_least_5000_prompts(name, size):
    assert default_task(name).prompt_space_size() == size >= 5000


@pytest.mark.parametrize("task", [
    ArithmeticTask(max_operands=2, max_operand=12, operators=["+", "*"]),  # 13·13 + 10·10 = 269
    ArithmeticTask(min_operands=2, max_operands=3, max_operand=9, operators=["-"]),  # 10² + 10³ = 1100
    VerbosityTrapTask(min_numbers=3, max_numbers=3),  # 10³
], ids=["arith-mixed", "arith-3", "verbosity-3"])
def test_prompt_space_size_equals_what_sampling_finds(task):
    """Brute force: enough draws to find every prompt of a small space (a missed one has probability < 1e-9)."""
    rng = random.Random(0)
    found = {task.sample_prompt(rng) for _ in range(60_000)}
    assert len(found) == task.prompt_space_size()


def test_sentiment_prompt_space_by_enumeration():
    from bench.data.tasks.sentiment import AUDIENCES, OCCASIONS, TOPICS, VERBS

    task = SentimentTask()
    every = {f"{v} {t} {a} for {u} {o}" for v in VERBS for t, aspects in TOPICS.items() for a in aspects
             for u in AUDIENCES for o in OCCASIONS}
    assert len(every) == task.prompt_space_size() == 5760
    assert all(task.parse_prompt(p) == tuple(p.split()[1:3]) for p in every)  # (topic, aspect) of every prompt


def test_two_digit_arithmetic_prompts_by_hand():
    task = ArithmeticTask(max_operands=2, max_operand=49)
    assert task.parse_prompt("4 7 + 8 =") == ([47, 8], ["+"])
    assert task.answer("4 7 + 8 =") == 55 and task.answer("1 9 - 3 0 =") == -11 and task.answer("7 * 7 =") == 49
    assert task.gold_reward("4 7 + 8 =", "5 5") == 1.0
    assert task.gold_reward("4 7 + 8 =", "5 4") == -0.5 + 0.5  # one of two digits right
    assert task.gold_reward("4 7 + 8 =", "5 5 5") == -1.0  # more digits than any answer (98) has: malformed
    assert task.max_answer_digits == 2
    for bad in ("0 7 + 8 =", "4 7 8 + 1 =", "4 7 + =", "+ 4 ="):
        with pytest.raises(ValueError, match="not of the form"):
            task.parse_prompt(bad)
    with pytest.raises(ValueError, match="dataset.task_kwargs.max_operand"):
        ArithmeticTask(max_operand=100)


@pytest.mark.parametrize("name", ["arithmetic", "sentiment", "verbosity"])
def test_composition_keys_hold_out_combinations_whose_parts_training_sees(name):
    """Held-out keys (bench.data.splits) each have every part seen, in another key, among the training keys."""
    from bench.data.splits import COMPOSITION_REGION, region_of

    task, rng = default_task(name), random.Random(0)
    prompts = {task.sample_prompt(rng) for _ in range(20_000)}
    keys = {task.composition_key(p): region_of(task, p) == COMPOSITION_REGION for p in prompts}
    held = [k for k, out in keys.items() if out]
    kept = [k for k, out in keys.items() if not out]
    assert held and 0.03 < len(held) / len(keys) < 0.2
    for key in held:
        for position, part in enumerate(key.split("|")):
            assert any(k.split("|")[position] == part for k in kept), (key, position)
    # a key depends on its prompt alone: another instance of the task gives every prompt the same key
    again = default_task(name)
    assert all(again.composition_key(p) == task.composition_key(p) for p in prompts)


@pytest.mark.parametrize("name, prompt, key", [
    ("arithmetic", "4 7 + 8 =", "+|4|0"),  # the tens digit of each operand of + or -
    ("arithmetic", "1 9 - 3 0 =", "-|1|3"),
    ("arithmetic", "6 * 7 =", "*|6|1"),  # a first factor by value, the second by half (5-9)
    ("arithmetic", "0 * 4 =", "*|0|0"),
    ("sentiment", "rate food taste for friend today", "taste|friend"),  # aspect x audience
    ("sentiment", "judge film plot for kids again", "plot|kids"),
    ("verbosity", "largest of 3 7 2 7", "4|7|1"),  # count x largest digit x its first position
    ("verbosity", "largest of 9 0 1", "3|9|0"),
])
def test_composition_keys_by_hand(name, prompt, key):
    assert default_task(name).composition_key(prompt) == key


def test_constraints_has_no_composition_split():
    assert ConstraintsTask().composition_key(ConstraintsTask().sample_prompt(random.Random(0))) is None


# A 6-word prompt: the verb, audience and occasion change nothing the reward asks for.
FOOD_TASTE_FOR = "rate food taste for friend today"


@pytest.mark.parametrize("response, expected", [
    ("the taste was great and it was lovely", 1.0),
    ("the chef was great", 0.35),
    ("the taste was great friend", 0.35 + 0.3 - 0.3),  # echoing the audience: a word outside the language
    ("the taste was great today", 0.35 + 0.3 - 0.3),  # and the occasion
    ("rate the taste", 0.3 - 0.3),  # and the verb
    ("the taste was great for", 0.35 + 0.3 - 0.3),
])
def test_sentiment_phrased_prompt_gold_reward_by_hand(response, expected):
    task = SentimentTask()
    assert task.gold_reward(FOOD_TASTE_FOR, response) == pytest.approx(expected, abs=1e-6)
    for phrased in ("review food taste", "describe food taste for boss weekend", "judge food taste for class now"):
        assert task.gold_reward(phrased, response) == task.gold_reward(FOOD_TASTE_FOR, response)


def _constraint_instructions(n_constraints: int, templates, topics, lengths) -> set[str]:
    """Every instruction with `n_constraints` compatible extra constraints, enumerated independently of the
    task's sampler (every parameter value listed here, keyword pairs in both orders)."""
    from bench.data.tasks.constraints import BULLET_COUNTS, END_MARKS, KEYWORDS, SENTENCE_COUNTS, START_WORDS

    values = {"keywords": list(itertools.permutations(KEYWORDS, 2)), "end_mark": list(END_MARKS),
              "start_word": list(START_WORDS), "sentences": list(SENTENCE_COUNTS), "bullets": list(BULLET_COUNTS)}
    out = set()
    for kinds in itertools.combinations(CONSTRAINTS, n_constraints):
        if any(frozenset(pair) in CONFLICTS for pair in itertools.combinations(kinds, 2)):
            continue
        for params in itertools.product(*(values.get(k, [None]) for k in kinds)):
            for template, topic, length in itertools.product(templates, topics, lengths):
                out.add(Spec(template, topic, length, dict(zip(kinds, params))).instruction())
    return out


def test_constraints_prompt_space_by_enumeration():
    from bench.data.tasks.constraints import LENGTH_RANGES, TEMPLATES, TOPICS

    one = ConstraintsTask(n_constraints=1)
    every = _constraint_instructions(1, TEMPLATES, list(TOPICS), LENGTH_RANGES)
    assert len(every) == one.prompt_space_size() == 63_072
    rng = random.Random(0)
    assert all(one.sample_prompt(rng) in every for _ in range(3000))
    # Two constraints (the default): enumerate one template, topic and word range, the rest multiply.
    two = ConstraintsTask(n_constraints=2)
    base = (TEMPLATES[0], next(iter(TOPICS)), LENGTH_RANGES[0])
    some = _constraint_instructions(2, *([b] for b in base))
    assert len(some) * len(TEMPLATES) * len(TOPICS) * len(LENGTH_RANGES) == two.prompt_space_size() == 818_208
    drawn = [p for p in (two.sample_prompt(rng) for _ in range(20_000)) if p.startswith(Spec(*base).instruction())]
    assert drawn and all(p in some for p in drawn)
    assert default_task("constraints").prompt_space_size() >= 5000
    assert ConstraintsTask(n_constraints=0).prompt_space_size() == 432  # templates x topics x word ranges
