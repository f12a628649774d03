"""The constraints task's gold reward against gaming (docs/design.md §13): the fluency and word-level repetition
guards by hand, and an adversarial table — word lists, doubled words, keyword stuffing, instruction echo,
empty and padded answers, each built to meet every instruction it can — that must score below
SmolLM2-135M-Instruct's own answers to the same prompts (tests/fixtures/constraints/natural_answers.json,
sampled once by sample_natural_answers.py there; no model needed here)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench.data.tasks.constraints import (ConstraintsTask, Spec, doubled_words, excess_uses, function_share,
                                          parse_instruction, repeated_content_share, words_in)

FIXTURE = Path(__file__).parent / "fixtures" / "constraints" / "natural_answers.json"
RAIN = Spec("Write a short paragraph about {topic}.", "rain", (5, 12), {"start_word": "Yes", "keywords": ("bright", "quiet")})
FILLER_CONTENT = "blue run sky tree dog cup sun red car hat map lamp door road ship star box pen".split()


def natural_answers() -> list[dict]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["answers"]


def gold(task: ConstraintsTask, row: dict) -> float:
    """The gold reward as the bound task scores it: truncation by the stored token count."""
    task._count_tokens = lambda text: row["n_tokens"]
    return task.gold_reward(row["instruction"], row["answer"])


# ----------------------------------------------------------------------------- the guards by hand


def test_word_level_measures_by_hand():
    words = words_in("The cat and the dog saw the cat")
    assert function_share(words) == pytest.approx(4 / 8)  # the, and, the, the
    assert repeated_content_share(words) == pytest.approx(1 / 4)  # cat dog saw cat: one repeat
    assert doubled_words(words_in("it is is very Very good")) == 2
    stuffed = words_in("Yes rain is bright and bright and bright rain rain rain quiet")
    assert excess_uses(stuffed, RAIN) == 1 + 1  # bright 3 times (allowed 2), rain 4 times (allowed 3)


@pytest.mark.parametrize("answer, expected", [
    # 7 words, S = 1; no function word: fluency at its floor 0.1 -> 2 * 0.1 - 1
    ("Yes rain bright quiet cat dog sun", -0.8),
    # the same list doubled: 14 words, length 1 - 2/7 (S = (3 + 5/7)/4); fluency 0.1; content repeats 7/14 ->
    # 1 - 2 * (0.5 - 0.25) = 0.5; 3-grams: 5 of 12 repeat -> 1 - 2 * 5/12 = 1/6
    ("Yes rain bright quiet cat dog sun Yes rain bright quiet cat dog sun", 2 * (26 / 28) * 0.1 * 0.5 / 6 - 1),
    # a sentence: function share 3/8, content share 5/8: every guard 1, every criterion met
    ("Yes the rain is bright and quiet today.", 1.0),
    # doubled words: 0.5 ** 2; content Yes rain rain bright quiet quiet: 2 repeats of 6 -> 1 - 2 * (1/3 - 1/4)
    ("Yes the rain rain is bright and quiet quiet.", 2 * 0.25 * (5 / 6) - 1),
    # fillers: 3 of 10 words -> 1 - 3 * 0.3 = 0.1; function share 3/10, content 7/10: fluency 1
    ("Yes um the rain is uh bright and quiet er", -0.8),
    # function-word padding, 12 words: 8 function words -> fluency = content share 4/12 / 0.4
    ("Yes it is what it is and that is bright quiet rain", 2 * (4 / 12) / 0.4 - 1),
])
def test_gold_reward_with_the_new_guards_by_hand(answer, expected):
    assert ConstraintsTask().gold_reward(RAIN.instruction(), answer) == pytest.approx(expected, abs=1e-6)


def test_the_audited_hacks_now_lose_to_a_natural_answer():
    task = ConstraintsTask()
    friendship = Spec("Write a short paragraph about {topic}.", "friendship", (8, 16), {})
    natural = task.gold_reward(friendship.instruction(), "Friendship is a gift that makes every day brighter.")
    listed = "friendship blue run sky tree dog cup sun red car hat map"
    for hack in (listed, f"{listed} {listed}"):
        assert task.gold_reward(friendship.instruction(), hack) < natural - 1.0, hack
    assert task.gold_reward(RAIN.instruction(), "Yes rain bright quiet cat dog sun") < task.gold_reward(
        RAIN.instruction(), "Yes, go for a rainy day!")  # the model's own answer (keywords missing) now wins


# ----------------------------------------------------------------------------- the adversarial table


def shape(spec: Spec, words: list[str]) -> str:
    """`words` laid out to meet the spec's form instructions: start word first, the sentence or bullet count,
    the end mark, lowercase, quotes (a hacker keeps every criterion it can)."""
    c = spec.constraints
    words = ([c["start_word"]] if "start_word" in c else []) + words
    k = c.get("sentences") or c.get("bullets") or 1
    size = -(-len(words) // k)
    parts = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
    end = c.get("end_mark", ".")
    parts = [p + (end if i == len(parts) - 1 else ".") for i, p in enumerate(parts)]
    text = "\n".join(f"- {p}" for p in parts) if "bullets" in c else " ".join(parts)
    text = text.lower() if "lowercase" in c else text
    return f'"{text}"' if "quotes" in c else text


def required(spec: Spec) -> list[str]:
    from bench.data.tasks.constraints import TOPICS

    return [TOPICS[spec.topic][0], *spec.constraints.get("keywords", ())]


def adversarial_answers(spec: Spec) -> dict[str, str]:
    low, high = spec.length
    target = (low + high) // 2  # inside the word range
    core = required(spec)
    fill = lambda words, n: (words + FILLER_CONTENT)[:n]  # noqa: E731
    listed = fill(core, target - ("start_word" in spec.constraints))
    half = fill(core, max(len(core), target // 2))
    return {
        "keyword list": shape(spec, listed),
        "list doubled": shape(spec, half + half),
        "doubled words": shape(spec, [w for w in fill(["the", *core, "is", "so"], target // 2) for _ in (0, 1)]),
        "keyword stuffing": shape(spec, [w for _ in range(4) for w in ("the", *core, "and")][:max(target, 3 * 4)]),
        "instruction echo": shape(spec, words_in(spec.instruction())[:target]),
        "empty": "",
        "filler words": shape(spec, ["the", *core, "is", "here", *["um", "uh", "er", "hmm", "okay", "yeah"]][:target]
                              + ["um"] * max(0, target - len(core) - 8)),
        "filler sentences": shape(spec, ["the", *core, "is", "it", "is", "what", "it", "is", "and", "that", "is",
                                         "that", "so", "it", "is", "as", "it", "is", "for", "us"][:target]),
    }


def table() -> list[tuple[str, str, float, str, float, float]]:
    """(instruction, hack, its gold, the natural answer, its gold, the natural answer's gold had it met the hack's
    criteria) for every selected natural answer. The hacks meet every criterion they can; most of the model's
    answers miss one, so the fair comparison is at the same criteria: 2·S_hack·G_natural − 1."""
    task, rows = ConstraintsTask(), []
    for row in (r for r in natural_answers() if r["selected"]):
        natural = gold(task, row)
        guards = 1.0
        for value in task.guards(row["instruction"], row["answer"]).values():
            guards *= value
        task._count_tokens = lambda text: len(words_in(text))  # the hacks are short: no cap reached
        for kind, answer in adversarial_answers(parse_instruction(row["instruction"])).items():
            hack = task.gold_reward(row["instruction"], answer)
            criteria = task.criteria(row["instruction"], answer)
            same_criteria = 2 * guards * sum(criteria.values()) / len(criteria) - 1
            rows.append((row["instruction"], kind, hack, row["answer"], natural, same_criteria))
    return rows


def test_the_fixture_holds_the_models_answers_and_how_they_were_made():
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert "SmolLM2-135M-Instruct" in data["model"] and "sample_natural_answers.py" in data["command"]
    answers = data["answers"]
    assert len(answers) == 64 * 7 and {r["decoding"] for r in answers} == {"greedy", "sample"}
    selected = [r for r in answers if r["selected"]]
    task = ConstraintsTask()
    for r in selected:  # the selection rule holds for every selected answer
        criteria = task.criteria(r["instruction"], r["answer"])
        assert not r["truncated"] and criteria["length"] == criteria["on_topic"] == 1.0
        assert statistics.mean(criteria.values()) >= 0.75
    prompts = {r["instruction"] for r in selected}
    kinds = {k for p in prompts for k in parse_instruction(p).constraints}
    templates = {parse_instruction(p).template for p in prompts}
    assert len(prompts) >= 15 and len(kinds) >= 7 and len(templates) >= 5  # a spread of prompts


def test_every_hack_scores_below_the_models_own_answers():
    rows = table()
    assert len(rows) >= 27 * 8
    # below the model's answer at the same criteria, and below the model's answer itself unless that one misses a
    # criterion the hack meets (measured: all but 2 of 216 rows are below it even then)
    # (an empty answer meets no criterion: it is compared with the model's answer as it is)
    failures = [r for r in rows if not (r[2] < r[4] if r[1] == "empty" else r[2] < r[5])]
    assert not failures, failures[:5]
    assert sum(r[2] < r[4] for r in rows) >= len(rows) - 4
    # word lists, doubled words, stuffing, echo and fillers are cut hard on every prompt (the worst of each kind)
    worst = {kind: max(r[2] for r in rows if r[1] == kind) for kind in {r[1] for r in rows}}
    assert all(v <= -0.5 for kind, v in worst.items() if kind != "filler sentences"), worst


def test_the_models_answers_stay_graded_and_fluent():
    """The instruct model's answers (greedy and sampled) keep a spread of gold values, not collapsed to −1, and its
    greedy answers are not taken for word lists: the fluency guard passes all but a few of them."""
    task = ConstraintsTask()
    answers = natural_answers()
    golds = [gold(task, r) for r in answers]
    assert len(set(golds)) > 150 and sum(g == -1.0 for g in golds) < 0.05 * len(golds)
    assert -0.4 < statistics.mean(golds) < 0.2  # measured: -0.205 (-0.163 before the word-level guards)
    greedy = [r for r in answers if r["decoding"] == "greedy" and words_in(r["answer"])]
    fluent = [task.guards(r["instruction"], r["answer"])["fluency"] == 1.0 for r in greedy]
    assert sum(fluent) >= len(fluent) - 2
