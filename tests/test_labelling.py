"""Bradley–Terry labelling: the preference probability, the label noise, the dropped identical pairs,
the normalised records, and the verbosity trap's length preference — checked on large samples
against hand-computed probabilities with binomial tolerances (4 standard errors)."""
from __future__ import annotations

import math
import random

import pytest

from bench.data.labelling import bradley_terry_label, label_pairs, sigmoid
from bench.data.tasks import build_task

N = 20_000


def tolerance(p: float, n: int, z: float = 4.0) -> float:
    return z * math.sqrt(p * (1 - p) / n)


def demo_pairs(task, n: int, seed: int) -> list[tuple[str, str, str]]:
    """(prompt, y1, y2) with two independent demonstrations per prompt (a stand-in for SFT samples)."""
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        prompt = task.sample_prompt(rng)
        samples.append((prompt, task.demonstration(prompt, rng), task.demonstration(prompt, rng)))
    return samples


def test_sigmoid_by_hand_and_stable():
    assert sigmoid(0.0) == 0.5
    assert sigmoid(math.log(3.0)) == pytest.approx(0.75)
    assert sigmoid(-math.log(3.0)) == pytest.approx(0.25)
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0


def test_identical_pair_is_none():
    task = build_task("arithmetic")
    assert bradley_terry_label(task, "3 + 4 * 2 =", "1 1", "1 1", random.Random(0), 1.0, 0.0) is None


@pytest.mark.parametrize("label_noise", [0.0, 0.1, 0.3])
def test_bt_probability_with_noise_matches_hand_computed_rate(label_noise):
    """verbosity, length_bias 1: r("7") = 1 + 1 = 2, r("it is 7") = 0.8 + 3 = 3.8, so with T = 2
    P(y1 ≻ y2) = σ(−0.9) = 0.28905, and after symmetric noise ε: p(1 − ε) + (1 − p)ε."""
    task = build_task("verbosity", length_bias=1.0)
    p = 1.0 / (1.0 + math.exp(0.9))
    expected = p * (1 - label_noise) + (1 - p) * label_noise
    rng = random.Random(1)
    wins = flips = 0
    for _ in range(N):
        labelled = bradley_terry_label(task, "largest of 3 7 2", "7", "it is 7", rng, 2.0, label_noise)
        chosen, rejected, info = labelled
        assert {chosen, rejected} == {"7", "it is 7"}
        assert info["p_y1_preferred"] == pytest.approx(p)
        wins += chosen == "7"
        flips += info["flipped"]
    assert abs(wins / N - expected) < tolerance(expected, N)
    assert abs(flips / N - label_noise) < tolerance(max(label_noise, 1e-3), N) + 1e-12


def test_bt_probability_matches_sigmoid_across_reward_gaps():
    """On real sentiment pairs (T = 0.5, no noise): in each bin of σ(Δr/T) the empirical rate of
    y1 being chosen matches the bin's mean probability."""
    task = build_task("sentiment")
    rng = random.Random(2)
    bins: dict[int, list[tuple[float, bool]]] = {}
    for prompt, y1, y2 in demo_pairs(task, N, seed=3):
        labelled = bradley_terry_label(task, prompt, y1, y2, rng, 0.5, 0.0)
        if labelled is None:
            continue
        chosen, _, info = labelled
        p = info["p_y1_preferred"]
        assert p == pytest.approx(sigmoid((task.gold_reward(prompt, y1) - task.gold_reward(prompt, y2)) / 0.5))
        bins.setdefault(min(int(p * 5), 4), []).append((p, chosen == y1))
    assert len(bins) == 5
    for outcomes in bins.values():
        n = len(outcomes)
        mean_p = sum(p for p, _ in outcomes) / n
        rate = sum(won for _, won in outcomes) / n
        assert abs(rate - mean_p) < tolerance(0.5, n) + 1e-9


def test_label_pairs_flip_rate_and_counts():
    task = build_task("arithmetic")
    samples = demo_pairs(task, N, seed=4)
    n_identical = sum(y1 == y2 for _, y1, y2 in samples)
    records, stats = label_pairs(task, samples, random.Random(5), temperature=0.1, label_noise=0.2)
    assert n_identical > 0  # arithmetic demos repeat often: the drop path is exercised
    assert stats["n_pairs"] == N
    assert stats["n_identical_dropped"] == n_identical
    assert stats["n_labelled"] == len(records) == N - n_identical
    assert stats["n_flipped"] == sum(r["meta"]["flipped"] for r in records)
    assert abs(stats["flip_rate"] - 0.2) < tolerance(0.2, len(records))
    # Gold rewards differ by >= 1/3 on unequal pairs, so at T = 0.1 the unflipped label agrees with
    # gold with p >= σ(3.3) = 0.965; with 20% flips agreement is about 0.8 * (>= 0.965) + 0.2 * (<= 0.035).
    assert 0.76 < stats["gold_agreement"] < 0.81


def test_label_pairs_records_are_normalised_and_reproducible():
    task = build_task("sentiment")
    samples = demo_pairs(task, 200, seed=6)
    records, stats = label_pairs(task, samples, random.Random(7), temperature=0.1, label_noise=0.1)
    again, _ = label_pairs(task, samples, random.Random(7), temperature=0.1, label_noise=0.1)
    assert records == again
    for record in records:
        assert set(record) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "meta"}
        assert record["chosen"] != record["rejected"]
        assert record["score_chosen"] == task.gold_reward(record["prompt"], record["chosen"])
        assert record["score_rejected"] == task.gold_reward(record["prompt"], record["rejected"])
        meta = record["meta"]
        assert meta["task"] == "sentiment"
        assert meta["label_score_chosen"] == task.label_reward(record["prompt"], record["chosen"])
        gap = meta["label_score_chosen"] - meta["label_score_rejected"]
        assert meta["p_chosen"] == pytest.approx(sigmoid(gap / 0.1))
    mean_chosen = sum(r["score_chosen"] for r in records) / len(records)
    assert stats["mean_score_chosen"] == pytest.approx(mean_chosen)
    assert stats["mean_score_chosen"] > stats["mean_score_rejected"]


def test_zero_temperature_limit_picks_the_higher_label_reward():
    task = build_task("sentiment")
    records, stats = label_pairs(task, demo_pairs(task, 2000, seed=8), random.Random(9), 1e-9, 0.0)
    for r in records:
        if r["meta"]["label_score_chosen"] != r["meta"]["label_score_rejected"]:
            assert r["meta"]["label_score_chosen"] > r["meta"]["label_score_rejected"]
    assert stats["n_flipped"] == 0


def test_verbosity_labels_prefer_the_longer_response_at_the_expected_rate():
    """Expected rate = mean over unequal-length pairs of P(longer wins) = p_longer(1−ε) + (1−p_longer)ε,
    p_longer = σ((r_label(longer) − r_label(shorter)) / T), computed pair by pair."""
    task = build_task("verbosity")
    temperature, label_noise = 0.1, 0.1
    samples = demo_pairs(task, N, seed=10)
    expected = []
    for prompt, y1, y2 in samples:
        if y1 != y2 and len(y1.split()) != len(y2.split()):
            longer, shorter = (y1, y2) if len(y1.split()) > len(y2.split()) else (y2, y1)
            p = sigmoid((task.label_reward(prompt, longer) - task.label_reward(prompt, shorter)) / temperature)
            expected.append(p * (1 - label_noise) + (1 - p) * label_noise)
    expected_rate = sum(expected) / len(expected)
    records, stats = label_pairs(task, samples, random.Random(11), temperature, label_noise)
    assert abs(stats["longer_chosen_rate"] - expected_rate) < tolerance(expected_rate, len(expected))
    # The trap bites: without noise the longer answer wins ~96% of the time and the labels disagree
    # with gold on most pairs (gold mildly penalises the padding the annotator rewards).
    _, clean = label_pairs(task, samples, random.Random(12), temperature, 0.0)
    assert clean["longer_chosen_rate"] > 0.9
    assert clean["gold_agreement"] < 0.45
    # Picking the label-preferred response loses gold against picking the gold-preferred one.
    best_by_gold = sum(max(r["score_chosen"], r["score_rejected"]) for r in records) / len(records)
    assert clean["mean_score_chosen"] < best_by_gold - 0.3


def test_gold_agreement_of_unbiased_tasks_is_high():
    for name in ("arithmetic", "sentiment"):
        task = build_task(name)
        _, stats = label_pairs(task, demo_pairs(task, 5000, seed=13), random.Random(14), 0.1, 0.0)
        assert stats["gold_agreement"] > 0.9, name


@pytest.mark.parametrize(
    "temperature, label_noise, match",
    [
        (0.0, 0.0, "temperature"),
        (-1.0, 0.0, "temperature"),
        (math.inf, 0.0, "temperature"),
        (1.0, 1.5, "label_noise"),
    ],
)
def test_bad_labelling_arguments_fail_clearly(temperature, label_noise, match):
    task = build_task("arithmetic")
    with pytest.raises(ValueError, match=match):
        label_pairs(task, [("3 + 4 =", "7", "8")], random.Random(0), temperature, label_noise)


def test_malformed_sample_names_its_index():
    task = build_task("arithmetic")
    with pytest.raises(ValueError, match=r"samples\[1\]"):
        label_pairs(task, [("3 + 4 =", "7", "8"), ("3 + 4 =", "7")], random.Random(0), 1.0, 0.0)


def test_empty_input_gives_nan_rates():
    _, stats = label_pairs(build_task("arithmetic"), [], random.Random(0), 1.0, 0.0)
    assert stats["n_pairs"] == stats["n_labelled"] == 0
    assert math.isnan(stats["flip_rate"]) and math.isnan(stats["gold_agreement"])


def test_drop_ties_removes_exactly_the_equal_label_reward_pairs():
    task = build_task("arithmetic")
    samples = demo_pairs(task, N, seed=6)
    ties = sum(y1 != y2 and task.label_reward(p, y1) == task.label_reward(p, y2) for p, y1, y2 in samples)
    identical = sum(y1 == y2 for _, y1, y2 in samples)
    kept, stats = label_pairs(task, samples, random.Random(7), temperature=0.1, label_noise=0.0, drop_ties=True)
    assert ties > 0  # two different wrong answers with the same digit match exist: the path is exercised
    assert stats["n_ties_dropped"] == ties and stats["n_identical_dropped"] == identical
    assert stats["n_labelled"] == len(kept) == N - ties - identical
    assert stats["n_gold_ties"] == 0  # arithmetic's label reward is its gold reward
    # no coin flips left: every pair has a gold gap ≥ 1/3, so at T = 0.1 BT agrees with gold w.p. ≥ σ(3.3) = 0.965
    assert stats["gold_agreement"] > 0.95
    _, without = label_pairs(task, samples, random.Random(7), temperature=0.1, label_noise=0.0)
    assert without["n_ties_dropped"] == 0 and without["n_gold_ties"] == ties
