"""Sentiment: write a short review of a topic; the gold reward likes positive, on-topic, concise text.

Owns the review language (topics, aspect nouns, positive/negative adjectives, a few function
words), its prompts ("rate food taste for friend today": a verb, a topic, one of its aspects, an audience
and an occasion; 5,760 distinct prompts), demonstrations that are mixed in sentiment (positive with
probability `positive_rate`), sometimes off topic, rambling or degenerate, and the gold reward.
See sentiment.md for the reward's definition and why the task exists. Knows nothing of models.
"""
from __future__ import annotations

import random
from collections import Counter

from bench.data.tasks.base import Task
from bench.data.tasks.common import exact, multiple_choice_items, require_int, require_probability, words_of

# topic -> its aspect nouns. Every word belongs to exactly one category.
TOPICS: dict[str, tuple[str, ...]] = {
    "food": ("taste", "chef", "dish", "price"),
    "film": ("plot", "actor", "music", "ending"),
    "hotel": ("room", "staff", "view", "bed"),
    "phone": ("screen", "battery", "camera", "case"),
    "game": ("level", "story", "sound", "controls"),
    "car": ("engine", "seat", "brakes", "paint"),
    "book": ("author", "cover", "chapter", "prose"),
    "park": ("grass", "bench", "path", "pond"),
    "cafe": ("coffee", "cake", "service", "tea"),
    "concert": ("band", "crowd", "stage", "tickets"),
}
POSITIVE = ("good", "great", "lovely", "superb", "fun")
NEGATIVE = ("bad", "awful", "dull", "poor", "rude")
FUNCTION_WORDS = ("the", "was", "and", "very", "it")
PROMPT_WORD = "review"
# The prompt's phrasing: how it asks, for whom and when. They change nothing the reward asks for (a
# review is judged the same whoever reads it), so a prompt differs from a training prompt in substance
# only through its topic and aspect; an answer that echoes them is off topic like any stray word.
VERBS = (PROMPT_WORD, "rate", "describe", "judge")
AUDIENCE_WORD = "for"
AUDIENCES = ("friend", "family", "boss", "team", "kids", "class")
OCCASIONS = ("today", "tonight", "weekend", "lately", "again", "now")
ALL_NOUNS = frozenset(w for topic, aspects in TOPICS.items() for w in (topic, *aspects))
RESPONSE_WORDS = ALL_NOUNS | set(POSITIVE) | set(NEGATIVE) | set(FUNCTION_WORDS)

# Gold reward weights (see sentiment.md). The best response scores exactly 1:
# two distinct positive adjectives (0.7) + the asked-for aspect (0.3), nothing penalised.
POSITIVE_WEIGHT = 0.35  # per distinct positive adjective, at most MAX_POSITIVES of them
MAX_POSITIVES = 2  # more praise earns nothing: longer is not better
NEGATIVE_WEIGHT = 0.35  # per negative adjective occurrence
ASPECT_WEIGHT = 0.3  # the aspect named in the prompt is mentioned
OFF_TOPIC_WEIGHT = 0.3  # per noun or topic word of another topic, or word outside the language
REPEAT_WEIGHT = 0.3  # per degenerate repetition (see `repetitions`)
FUNCTION_WORD_ALLOWANCE = 3  # "the ... was ... and ..." repeats naturally, up to this many times
RAMBLE_FREE_WORDS = 12
RAMBLE_WEIGHT = 0.1  # per word beyond RAMBLE_FREE_WORDS


def repetitions(words: list[str]) -> int:
    """Degenerate repetition count: extra uses of a content word, function words beyond their
    allowance, and immediately repeated words ("great great" counts twice: extra use + adjacent)."""
    counts = Counter(words)
    extra = sum(
        max(0, c - (FUNCTION_WORD_ALLOWANCE if w in FUNCTION_WORDS else 1)) for w, c in counts.items()
    )
    adjacent = sum(a == b for a, b in zip(words, words[1:]))
    return extra + adjacent


class SentimentTask(Task):
    """Prompts "rate food taste for friend today"; responses are short clauses like "the taste was great"."""

    name = "sentiment"
    max_response_tokens = 24

    def __init__(
        self,
        positive_rate: float = 0.5,
        aspect_rate: float = 0.7,
        off_topic_rate: float = 0.1,
        degenerate_rate: float = 0.1,
        max_clauses: int = 3,
    ) -> None:
        require_probability(positive_rate, "positive_rate")
        require_probability(aspect_rate, "aspect_rate")
        require_probability(off_topic_rate, "off_topic_rate")
        require_probability(degenerate_rate, "degenerate_rate")
        # 3 clauses of <= 5 words + 2 "and" + <= 4 degenerate words = 21 <= max_response_tokens.
        require_int(max_clauses, "max_clauses", 1, 3, f"demonstrations must fit {self.max_response_tokens} tokens")
        self.positive_rate = float(positive_rate)
        self.aspect_rate = float(aspect_rate)
        self.off_topic_rate = float(off_topic_rate)
        self.degenerate_rate = float(degenerate_rate)
        self.max_clauses = max_clauses
        self.params = {
            "positive_rate": self.positive_rate,
            "aspect_rate": self.aspect_rate,
            "off_topic_rate": self.off_topic_rate,
            "degenerate_rate": self.degenerate_rate,
            "max_clauses": max_clauses,
        }

    @property
    def vocabulary(self) -> list[str]:
        nouns = [w for topic, aspects in TOPICS.items() for w in (topic, *aspects)]
        return [*VERBS, *nouns, AUDIENCE_WORD, *AUDIENCES, *OCCASIONS, *POSITIVE, *NEGATIVE, *FUNCTION_WORDS]

    def prompt_space_size(self) -> int:
        return len(VERBS) * sum(len(a) for a in TOPICS.values()) * len(AUDIENCES) * len(OCCASIONS)

    def sample_prompt(self, rng: random.Random) -> str:
        topic = rng.choice(list(TOPICS))
        return (f"{rng.choice(VERBS)} {topic} {rng.choice(TOPICS[topic])} "
                f"{AUDIENCE_WORD} {rng.choice(AUDIENCES)} {rng.choice(OCCASIONS)}")

    def composition_key(self, prompt: str) -> str:
        """The aspect with the audience: both are seen in training with other partners (the aspect for other
        readers, the reader about other aspects), never together where the key is held out."""
        words = words_of(prompt)
        topic, aspect = self.parse_prompt(prompt)
        return f"{aspect}|{words[4] if len(words) == 6 else ''}"

    def parse_prompt(self, prompt: str) -> tuple[str, str]:
        """(topic, aspect) of "<verb> <topic> <aspect> for <audience> <occasion>" (or of the bare first three
        words, as hand-written examples use)."""
        words = words_of(prompt)
        ok = len(words) in (3, 6) and words[0] in VERBS and words[1] in TOPICS and words[2] in TOPICS[words[1]]
        ok = ok and (len(words) == 3 or (words[3] == AUDIENCE_WORD and words[4] in AUDIENCES and words[5] in OCCASIONS))
        if not ok:
            raise ValueError(f"sentiment prompt {prompt!r} is not of the form '<verb> <topic> <aspect of topic> "
                             f"for <audience> <occasion>' (verbs: {', '.join(VERBS)})")
        return words[1], words[2]

    def _clause(self, topic: str, aspect: str, first: bool, adjective: str, rng: random.Random) -> list[str]:
        if first and rng.random() < self.aspect_rate:
            noun = aspect
        elif rng.random() < self.off_topic_rate:
            other = rng.choice([t for t in TOPICS if t != topic])
            noun = rng.choice((other, *TOPICS[other]))
        else:
            noun = rng.choice((topic, *TOPICS[topic]))
        template = rng.randrange(4)
        if template == 0:
            return ["the", noun, "was", adjective]
        if template == 1:
            return ["the", noun, "was", "very", adjective]
        if template == 2:
            return [adjective, noun]
        return ["it", "was", adjective]

    def demonstration(self, prompt: str, rng: random.Random) -> str:
        topic, aspect = self.parse_prompt(prompt)
        words: list[str] = []
        for i in range(rng.randint(1, self.max_clauses)):
            adjective = rng.choice(POSITIVE if rng.random() < self.positive_rate else NEGATIVE)
            if i:
                words.append("and")
            words += self._clause(topic, aspect, i == 0, adjective, rng)
        if rng.random() < self.degenerate_rate:
            # Degenerate: the last word stutters 2-4 more times (what a badly trained LM does).
            words += [words[-1]] * rng.randint(2, 4)
        return " ".join(words)

    def gold_reward(self, prompt: str, response: str) -> float:
        """clip(0.35·min(#distinct positive, 2) − 0.35·#negative + 0.3·[aspect]
        − 0.3·#off-topic − 0.3·#repetitions − 0.1·max(0, n − 12), −1, 1); empty → −1."""
        topic, aspect = self.parse_prompt(prompt)
        words = words_of(response)
        if not words:
            return -1.0
        own = {topic, *TOPICS[topic]}
        n_positive = len({w for w in words if w in POSITIVE})
        n_negative = sum(w in NEGATIVE for w in words)
        # Another topic's words, and words outside the response language (incl. echoing "review").
        n_off_topic = sum(w not in own and (w in ALL_NOUNS or w not in RESPONSE_WORDS) for w in words)
        reward = (
            POSITIVE_WEIGHT * min(n_positive, MAX_POSITIVES)
            - NEGATIVE_WEIGHT * n_negative
            + ASPECT_WEIGHT * (aspect in words)
            - OFF_TOPIC_WEIGHT * n_off_topic
            - REPEAT_WEIGHT * repetitions(words)
            - RAMBLE_WEIGHT * max(0, len(words) - RAMBLE_FREE_WORDS)
        )
        return exact(max(-1.0, min(1.0, reward)))

    def candidate_responses(self, prompt: str, rng: random.Random) -> list[str]:
        """For lm-eval items: an ideal review, a negative one, an off-topic one and a degenerate one."""
        topic, aspect = self.parse_prompt(prompt)
        good = rng.sample(POSITIVE, 2)
        other = rng.choice([t for t in TOPICS if t != topic])
        ideal = f"the {aspect} was {good[0]} and it was {good[1]}"
        negative = f"the {aspect} was {rng.choice(NEGATIVE)} and it was {rng.choice(NEGATIVE)}"
        off_topic = f"the {rng.choice(TOPICS[other])} was {good[0]}"
        degenerate = " ".join([good[1]] * rng.randint(3, 6))
        return [ideal, negative, off_topic, degenerate]

    def multiple_choice_items(self, rng: random.Random, n: int) -> list[dict]:
        return multiple_choice_items(self.gold_reward, self.sample_prompt, self.candidate_responses, rng, n)
