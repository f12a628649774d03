"""Constraints: IFEval-style verifiable instructions for a real pretrained chat model (docs/design.md §13).

Owns the prompt language (a task template × a topic, a word-count range and `n_constraints` further
instructions), the graded gold reward that checks them in code, with guards against degenerate answers, and the
multiple-choice items for lm-eval. The reward parses the instructions back out of the prompt text, so it needs no
side table; constraints.md defines it and says why it is graded and why hacking it does not pay.
"""
from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field

from bench.data.tasks.base import PretrainedModelTask
from bench.data.tasks.common import exact, multiple_choice_items, require_int

# topic as written in the prompt -> the words that count as mentioning it (whole words, any case)
TOPICS: dict[str, tuple[str, ...]] = {
    "cats": ("cat", "cats", "kitten", "kittens"),
    "the ocean": ("ocean", "oceans", "sea", "seas"),
    "coffee": ("coffee",),
    "bicycles": ("bicycle", "bicycles", "bike", "bikes", "cycling"),
    "rain": ("rain", "rainy", "raining", "rains", "rainfall"),
    "libraries": ("library", "libraries"),
    "volcanoes": ("volcano", "volcanoes", "volcanos", "volcanic"),
    "music": ("music", "musical", "song", "songs"),
    "gardening": ("garden", "gardens", "gardening", "gardener"),
    "the moon": ("moon", "lunar"),
    "trains": ("train", "trains", "railway", "railways"),
    "chess": ("chess",),
    "bread": ("bread", "breads", "baking"),
    "winter": ("winter", "winters", "snow"),
    "robots": ("robot", "robots", "robotic", "robotics"),
    "honey bees": ("bee", "bees", "honey"),
    "mountains": ("mountain", "mountains"),
    "friendship": ("friend", "friends", "friendship", "friendships"),
    "tea": ("tea", "teas"),
    "forests": ("forest", "forests", "woods"),
    "soccer": ("soccer", "football"),
    "clocks": ("clock", "clocks"),
    "apples": ("apple", "apples"),
    "the desert": ("desert", "deserts"),
}
TEMPLATES = (
    "Write a short paragraph about {topic}.",
    "Describe {topic} to a child.",
    "Give one piece of advice about {topic}.",
    "Tell me an interesting fact about {topic}.",
    "Explain what people like about {topic}.",
    "Write a short note to a friend about {topic}.",
)
# Word-count ranges; every prompt has one. They stay well inside the default 48-token cap
# (~1.3 tokens per English word), so an answer that satisfies its range never needs to be cut.
LENGTH_RANGES = ((5, 12), (8, 16), (12, 24))
KEYWORDS = ("bright", "quiet", "simple", "happy", "water", "light", "green", "small", "warm", "morning",
            "gentle", "careful")
START_WORDS = ("Yes", "Today", "Imagine", "Honestly", "Look")
END_MARKS = {"?": "a question mark", "!": "an exclamation mark"}
SENTENCE_COUNTS = (2, 3)
BULLET_COUNTS = (2, 3)

# How many values each parameterised constraint draws from (`_parameter`); the others have one. Keyword
# pairs are ordered: the instruction names them in their drawn order, so two orders are two prompts.
PARAMETER_COUNTS = {
    "keywords": len(KEYWORDS) * (len(KEYWORDS) - 1),
    "end_mark": len(END_MARKS),
    "start_word": len(START_WORDS),
    "sentences": len(SENTENCE_COUNTS),
    "bullets": len(BULLET_COUNTS),
}
CONSTRAINTS = ("no_commas", "lowercase", "keywords", "end_mark", "quotes", "start_word", "sentences", "bullets")
# Pairs that cannot both be satisfied, or only awkwardly (a capitalised start word in an all-lowercase
# answer; a closing quote where the end mark must be; a bulleted list counted in sentences).
CONFLICTS = frozenset(frozenset(p) for p in (
    ("lowercase", "start_word"), ("quotes", "end_mark"), ("quotes", "bullets"), ("quotes", "start_word"),
    ("sentences", "bullets"), ("bullets", "start_word"), ("bullets", "end_mark"),
))

# Gold reward (see constraints.md): r = 2·S·G − 1, S = mean criterion score, G = product of the guard
# factors below. Multiplicative, so answers stay graded (and rarely tied) however badly they fail.
TRUNCATED_FACTOR = 0.5  # hitting the cap: at best 0, below any complete answer meeting half its criteria
REPEAT_WEIGHT = 2.0  # G ×= 1 − 2 × the share of repeated word 3-grams (half of them repeated: 0)
ECHO_WEIGHT = 1.0  # G ×= 1 − the share of the answer's word 4-grams copied from the instruction
# Fluency: G ×= min(1, share of function words / FLUENCY_TARGET). English prose is ~40-55% function words; the
# instruct model's own answers that meet their constraints have at least FLUENCY_TARGET (constraints.md gives
# the measured distribution), a list of content words has none. The factor stays >= FLUENCY_FLOOR so that two
# word lists still rank by the criteria they meet (the reward stays graded).
FLUENCY_TARGET = 0.2
FLUENCY_FLOOR = 0.1
# ... and the other side: G ×= min(1, share of content words / CONTENT_TARGET). Padding made of function words
# ("It is what it is. That is that.") carries no content; a natural answer's content share is well above it.
CONTENT_TARGET = 0.4
FILLER_WEIGHT = 3.0  # G ×= 1 − 3 × the share of filler words ("um", "uh", "blah", ...): 1 in 3 words: 0
FILLER_WORDS = frozenset("um umm uh uhh er erm hmm hm ah oh eh ok okay yeah yep blah etc la lol".split())
# Word-level repetition: G ×= 1 − WORD_REPEAT_WEIGHT × (share of content words repeating an earlier one, beyond
# WORD_REPEAT_ALLOWANCE: naming the topic again is natural; a list said twice is not).
WORD_REPEAT_ALLOWANCE = 0.25
WORD_REPEAT_WEIGHT = 2.0
DOUBLED_FACTOR = 0.5  # G ×= 0.5 per word that repeats the word before it ("bright bright", "the the")
# Keyword stuffing: G ×= STUFFING_FACTOR per use of a required word (each keyword, and the topic's forms
# together) beyond its allowance: a keyword is needed once, the topic maybe named in every sentence.
STUFFING_FACTOR = 0.5
KEYWORD_ALLOWANCE = 2
TOPIC_ALLOWANCE = 3
EMPTY_REWARD = -1.0

# Closed-class English words (articles, pronouns, auxiliaries and modals, prepositions, conjunctions,
# determiners and a few very common adverbs): the glue of a sentence, absent from a list of words.
FUNCTION_WORDS = frozenset("""
a an the this that these those there here
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
myself yourself itself ourselves themselves one ones someone something anyone anything everyone everything
who whom whose which what when where why how whether
is am are was were be been being do does did done doing have has had having
can could will would shall should may might must
of in on at to for from by with without about above below over under into onto out up down off
through across after before between among around during since until upon within near like as than
and or but nor so yet if because while although though unless then also too very just not no
all any each every some many much more most few less least other another such own same both either neither
""".split())

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def words_in(text: str) -> list[str]:
    """Words: runs of letters/digits, with inner apostrophes or hyphens ("don't", "well-known")."""
    return WORD.findall(text)


@dataclass(frozen=True)
class Spec:
    """What a prompt asks for: topic, word range, and the extra constraints with their parameters."""

    template: str
    topic: str
    length: tuple[int, int]
    constraints: dict = field(default_factory=dict)  # kind -> parameter (None, a word pair, a mark, a count)

    def instruction(self) -> str:
        parts = [self.template.format(topic=self.topic), f"Answer in {self.length[0]} to {self.length[1]} words."]
        for kind in CONSTRAINTS:  # a fixed order, so a spec has one rendering
            if kind in self.constraints:
                parts.append(PHRASES[kind](self.constraints[kind]))
        return " ".join(parts)


PHRASES = {
    "no_commas": lambda _: "Do not use any commas.",
    "lowercase": lambda _: "Write everything in lowercase letters.",
    "keywords": lambda words: f'Include the words "{words[0]}" and "{words[1]}".',
    "end_mark": lambda mark: f"End your answer with {END_MARKS[mark]}.",
    "quotes": lambda _: "Wrap your entire answer in double quotation marks.",
    "start_word": lambda word: f'Start your answer with the word "{word}".',
    "sentences": lambda k: f"Use exactly {k} sentences.",
    "bullets": lambda k: f'Answer with exactly {k} bullet points, each on its own line starting with "- ".',
}
_TOPIC_GROUP = "(" + "|".join(re.escape(t) for t in TOPICS) + ")"
_TEMPLATE_PATTERNS = [(t, re.compile(re.escape(t).replace(re.escape("{topic}"), _TOPIC_GROUP))) for t in TEMPLATES]
_LENGTH_PATTERN = re.compile(r"Answer in (\d+) to (\d+) words\.")
_PARSERS = {
    "no_commas": (re.compile(re.escape(PHRASES["no_commas"](None))), lambda m: None),
    "lowercase": (re.compile(re.escape(PHRASES["lowercase"](None))), lambda m: None),
    "keywords": (re.compile(r'Include the words "(\w+)" and "(\w+)"\.'), lambda m: (m.group(1), m.group(2))),
    "end_mark": (re.compile(r"End your answer with (a question mark|an exclamation mark)\."),
                 lambda m: {v: k for k, v in END_MARKS.items()}[m.group(1)]),
    "quotes": (re.compile(re.escape(PHRASES["quotes"](None))), lambda m: None),
    "start_word": (re.compile(r'Start your answer with the word "(\w+)"\.'), lambda m: m.group(1)),
    "sentences": (re.compile(r"Use exactly (\d+) sentences\."), lambda m: int(m.group(1))),
    "bullets": (re.compile(r'Answer with exactly (\d+) bullet points, each on its own line starting with "- "\.'),
                lambda m: int(m.group(1))),
}


def parse_instruction(prompt: str) -> Spec:
    """The Spec of a prompt (plain instruction or rendered with a chat template); ValueError if the
    prompt is not one of this task's."""
    found = [(t, m) for t, pattern in _TEMPLATE_PATTERNS if (m := pattern.search(prompt))]
    length = _LENGTH_PATTERN.search(prompt)
    if len(found) != 1 or length is None:
        raise ValueError(f"constraints prompt {prompt[-200:]!r} does not hold exactly one task template and a word range")
    template, match = found[0]
    constraints = {}
    for kind, (pattern, value) in _PARSERS.items():
        m = pattern.search(prompt)
        if m:
            constraints[kind] = value(m)
    return Spec(template, match.group(1), (int(length.group(1)), int(length.group(2))), constraints)


# --------------------------------------------------------------------------- criterion scores in [0, 1]


def range_score(n: int, low: int, high: int) -> float:
    """1 inside [low, high]; outside, falls linearly to 0 at one range-width beyond the nearer bound."""
    distance = low - n if n < low else n - high if n > high else 0
    return max(0.0, 1.0 - distance / max(1, high - low))


def count_score(n: int, target: int) -> float:
    """1 at the target count, minus 1/target per unit away (0 at twice or at none)."""
    return max(0.0, 1.0 - abs(n - target) / target)


def sentence_count(text: str) -> int:
    """Sentences: runs of text ended by . ! or ? (a final run without one counts too)."""
    pieces = [p for p in re.split(r"[.!?]+(?:[\"'”’)]*)(?:\s+|$)", text.strip()) if words_in(p)]
    return len(pieces)


def bullet_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if re.match(r"\s*[-*•]\s+\S", line))


def score_constraint(kind: str, value, text: str, words: list[str]) -> float:
    if kind == "no_commas":
        return 1.0 / (1 + text.count(",") + text.count("，"))
    if kind == "lowercase":
        cased = [c for c in text if c.isalpha() and c.lower() != c.upper()]
        return sum(c.islower() for c in cased) / len(cased) if cased else 0.0
    if kind == "keywords":
        present = {w.lower() for w in words}
        return sum(k.lower() in present for k in value) / len(value)
    if kind == "end_mark":
        body = text.strip().rstrip("\"'”’)")
        return 1.0 if body.endswith(value) else 0.25 if value in body else 0.0
    if kind == "quotes":
        body = text.strip()
        return 0.5 * body.startswith(('"', "“")) + 0.5 * (len(body) > 1 and body.endswith(('"', "”")))
    if kind == "start_word":
        first = words[0].lower() if words else ""
        return 1.0 if first == value.lower() else 0.0
    if kind == "sentences":
        return count_score(sentence_count(text), value)
    if kind == "bullets":
        return count_score(bullet_count(text), value)
    raise ValueError(f"unknown constraint {kind!r}")


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def repeated_share(words: list[str], n: int = 3) -> float:
    """Share of the word n-grams that repeat an earlier one (0 for text without repeats)."""
    grams = ngrams([w.lower() for w in words], n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def function_share(words: list[str]) -> float:
    """Share of the words that are function words (FUNCTION_WORDS; 0 for no words)."""
    return sum(w.lower() in FUNCTION_WORDS for w in words) / len(words) if words else 0.0


def repeated_content_share(words: list[str]) -> float:
    """Share of the content words (not FUNCTION_WORDS) that repeat an earlier content word (0 for none)."""
    content = [w.lower() for w in words if w.lower() not in FUNCTION_WORDS]
    return 1.0 - len(set(content)) / len(content) if content else 0.0


def doubled_words(words: list[str]) -> int:
    """Words equal (any case) to the word right before them."""
    lowered = [w.lower() for w in words]
    return sum(a == b for a, b in zip(lowered, lowered[1:]))


def excess_uses(words: list[str], spec: Spec) -> int:
    """Uses of required words beyond their allowance: each keyword over KEYWORD_ALLOWANCE, the topic's forms
    together over TOPIC_ALLOWANCE."""
    lowered = [w.lower() for w in words]
    keywords = spec.constraints.get("keywords", ())
    excess = sum(max(0, lowered.count(k.lower()) - KEYWORD_ALLOWANCE) for k in keywords)
    topic_uses = sum(w in TOPICS[spec.topic] for w in lowered)
    return excess + max(0, topic_uses - TOPIC_ALLOWANCE)


def echo_share(words: list[str], instruction: str, n: int = 4) -> float:
    """Share of the answer's word n-grams that occur in the instruction (copying the prompt)."""
    grams = ngrams([w.lower() for w in words], n)
    source = set(ngrams([w.lower() for w in words_in(instruction)], n))
    return sum(g in source for g in grams) / len(grams) if grams else 0.0


# --------------------------------------------------------------------------- candidate answers (lm-eval)

OPENERS = (
    "Many people enjoy {topic}.",
    "There is always something new to learn about {topic}.",
    "People all over the world talk about {topic}.",
    "I have always liked {topic}.",
    "I like {topic}.",
    "A walk with a friend is a fine time to think about {topic}.",
)
# Follow-up sentences never name the topic and share no word 3-gram with each other or the openers,
# so a composed answer has no repeated 3-gram (the repetition guard stays at 0).
FOLLOW_UPS = (
    "It can make an ordinary day feel special.",
    "Even a short moment with it brings joy.",
    "Small details matter here.",
    "Curious minds keep finding surprises.",
    "Try it once and see for yourself.",
    "Everyone has a favourite story about it.",
    "It rewards patience.",
)
KEYWORD_SENTENCE = "Think of {0} and {1}."


class ConstraintsTask(PretrainedModelTask):
    """Prompts "<template about topic> Answer in a to b words. <constraints>"; gold = graded share of
    satisfied criteria with guards against degenerate answers (constraints.md)."""

    name = "constraints"

    def __init__(self, n_constraints: int = 2, max_response_tokens: int = 48) -> None:
        require_int(n_constraints, "n_constraints", 0, 3, "extra instructions beside the word range; more would conflict")
        require_int(max_response_tokens, "max_response_tokens", 32, 512,
                    f"the widest word range ({LENGTH_RANGES[-1][1]} words) must fit")
        self.n_constraints = n_constraints
        self.max_response_tokens = max_response_tokens
        self.params = {"n_constraints": n_constraints, "max_response_tokens": max_response_tokens}
        self._render = lambda instruction: instruction
        self._count_tokens = lambda text: len(words_in(text))
        self.choice_delimiter = " "  # a bare instruction and its answer are separate words

    def bind_tokenizer(self, tokenizer) -> None:
        """Render prompts with the tokenizer's chat template (when it has one) and count tokens with it
        for the truncation guard. Until called, prompts are bare instructions and tokens are words."""
        if getattr(tokenizer, "chat_template", None):
            self._render = lambda instruction: tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}], add_generation_prompt=True, tokenize=False)
            self.choice_delimiter = ""  # the answer follows the rendered "assistant" header directly
        self._count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------------- prompts

    def sample_spec(self, rng: random.Random) -> Spec:
        constraints: dict = {}
        kinds = list(CONSTRAINTS)
        rng.shuffle(kinds)
        for kind in kinds:
            if len(constraints) == self.n_constraints:
                break
            if any(frozenset((kind, other)) in CONFLICTS for other in constraints):
                continue
            constraints[kind] = self._parameter(kind, rng)
        return Spec(rng.choice(TEMPLATES), rng.choice(list(TOPICS)), rng.choice(LENGTH_RANGES), constraints)

    @staticmethod
    def _parameter(kind: str, rng: random.Random):
        # Keep in step with PARAMETER_COUNTS (prompt_space_size).
        if kind == "keywords":
            return tuple(rng.sample(KEYWORDS, 2))
        if kind == "end_mark":
            return rng.choice(list(END_MARKS))
        if kind == "start_word":
            return rng.choice(START_WORDS)
        if kind == "sentences":
            return rng.choice(SENTENCE_COUNTS)
        if kind == "bullets":
            return rng.choice(BULLET_COUNTS)
        return None

    def sample_prompt(self, rng: random.Random) -> str:
        return self._render(self.sample_spec(rng).instruction())

    def prompt_space_size(self) -> int:
        """Templates × topics × word ranges × the parameterised sets of `n_constraints` compatible kinds.
        Every compatible set can be drawn: any set the greedy draw in `sample_spec` stops at early would be
        a maximal compatible set, and the smallest has 4 kinds (e.g. no_commas, keywords, lowercase,
        bullets), above the largest `n_constraints` (3). Instructions render in a fixed order, so each
        (spec) is one prompt."""
        sets = sum(math.prod(PARAMETER_COUNTS.get(k, 1) for k in kinds)
                   for kinds in itertools.combinations(CONSTRAINTS, self.n_constraints)
                   if not any(frozenset(pair) in CONFLICTS for pair in itertools.combinations(kinds, 2)))
        return len(TEMPLATES) * len(TOPICS) * len(LENGTH_RANGES) * sets

    # ----------------------------------------------------------------------- reward

    def criteria(self, prompt: str, response: str) -> dict[str, float]:
        """Each criterion's score in [0, 1]: length, on_topic and every extra constraint."""
        spec = parse_instruction(prompt)
        words = words_in(response)
        present = {w.lower() for w in words}
        scores = {"length": range_score(len(words), *spec.length),
                  "on_topic": float(any(form in present for form in TOPICS[spec.topic]))}
        for kind, value in spec.constraints.items():
            scores[kind] = score_constraint(kind, value, response, words)
        return scores

    def guards(self, prompt: str, response: str) -> dict[str, float]:
        """The guard factors in [0, 1] (1 = nothing wrong): truncated at the cap, repeated 3-grams,
        4-grams copied from the instruction, too few function words (fluency), repeated content words,
        doubled words, required words stuffed in."""
        spec = parse_instruction(prompt)
        words = words_in(response)
        return {
            "truncated": TRUNCATED_FACTOR if self._count_tokens(response) >= self.max_response_tokens else 1.0,
            "repetition": max(0.0, 1.0 - REPEAT_WEIGHT * repeated_share(words)),
            "echo": max(0.0, 1.0 - ECHO_WEIGHT * echo_share(words, spec.instruction())),
            "fluency": max(FLUENCY_FLOOR, min(1.0, function_share(words) / FLUENCY_TARGET,
                                              (1.0 - function_share(words)) / CONTENT_TARGET)),
            "filler": max(0.0, 1.0 - FILLER_WEIGHT * sum(w.lower() in FILLER_WORDS for w in words) / max(1, len(words))),
            "word_repeats": max(0.0, 1.0 - WORD_REPEAT_WEIGHT * max(0.0, repeated_content_share(words)
                                                                    - WORD_REPEAT_ALLOWANCE)),
            "doubled": DOUBLED_FACTOR ** doubled_words(words),
            "stuffing": STUFFING_FACTOR ** excess_uses(words, spec),
        }

    def gold_reward(self, prompt: str, response: str) -> float:
        """2·mean(criteria)·Π(guards) − 1, in [−1, 1]; −1 for an answer with no word."""
        scores = self.criteria(prompt, response)
        if not words_in(response):
            return EMPTY_REWARD
        factor = 1.0
        for value in self.guards(prompt, response).values():
            factor *= value
        return exact(2.0 * factor * sum(scores.values()) / len(scores) - 1.0)

    # ----------------------------------------------------------------------- lm-eval items

    def compose(self, spec: Spec, rng: random.Random, topic: str | None = None) -> str:
        """A natural answer built from the sentence bank that meets `spec` when it can (tries random
        compositions, keeps the best by gold reward); `topic` replaces the spec's (an off-topic answer)."""
        return self._best_plan(spec, rng)[0].render(spec, topic or spec.topic)

    def _best_plan(self, spec: Spec, rng: random.Random) -> tuple["Plan", float]:
        prompt = spec.instruction()
        best, best_reward = None, float("-inf")
        for _ in range(1000):  # a tight range with a sentence count fits few plans (~1 in 130)
            plan = Plan.draw(spec, rng)
            reward = self.gold_reward(prompt, plan.render(spec, spec.topic))
            if reward > best_reward:
                best, best_reward = plan, reward
            if reward >= 1.0:
                break
        return best, best_reward

    def candidate_responses(self, prompt: str, rng: random.Random) -> list[str]:
        """Three answers made of the same bank sentences: the compliant one first, one breaking exactly one
        instruction (drawn at random; the word range when there is none) and one about another topic. All are
        plain sentences of about the same length, so a model's preference among them is a preference about
        following the instruction (constraints.md). Tries compositions until one has both variants; returns the
        compliant answer alone if none does."""
        spec = parse_instruction(prompt)
        target = rng.choice(list(spec.constraints)) if spec.constraints else "length"
        for _ in range(50):
            plan, reward = self._best_plan(spec, rng)
            if reward < 1.0:
                continue
            good, broken = self._variants(prompt, spec, plan, rng)
            if target in broken and "on_topic" in broken:
                return [good, broken[target], broken["on_topic"]]
        return [self.compose(spec, rng)]

    def _variants(self, prompt: str, spec: Spec, plan: "Plan", rng: random.Random) -> tuple[str, dict[str, str]]:
        """The plan's compliant answer and {requirement: an answer breaking only it} for the requirements a
        variant of the same sentences can break (each instruction, the topic, the range without instructions)."""
        good = plan.render(spec, spec.topic)
        other_topic = rng.choice([t for t in TOPICS if t != spec.topic])
        # Each form instruction is broken by a form of about the same likelihood a priori, so that choosing is
        # following the instruction: the other end mark, single quotes, a numbered list, two sentences joined.
        variants = {"no_commas": ("join", "aside"), "sentences": ("and",)}
        broken = [plan.render(violating(spec, kind, rng), spec.topic, variant=variant)
                  for kind in spec.constraints for variant in variants.get(kind, (None,))]
        if "quotes" in spec.constraints:
            broken.append("'" + plan.render(violating(spec, "quotes", rng), spec.topic) + "'")
        if "bullets" in spec.constraints:
            broken.append("\n".join(f"{i}. {line[2:]}" for i, line in enumerate(good.split("\n"), start=1)))
        broken.append(plan.render(spec, other_topic))
        if not spec.constraints:  # the range: all follow-ups the bank has, or the opener alone
            longer = Plan(plan.opener, plan.follow_ups + [f for f in FOLLOW_UPS if f not in plan.follow_ups])
            broken += [p.render(spec, spec.topic) for p in (longer, Plan(plan.opener, []))]
        # keep the answers that break exactly one requirement (the one they were made to break), one per kind
        kept: dict[str, str] = {}
        for answer in broken:
            failed = [k for k, v in self.criteria(prompt, answer).items() if v < 1.0]
            if len(failed) == 1 and failed[0] not in kept and all(v == 1.0 for v in self.guards(prompt, answer).values()):
                kept[failed[0]] = answer
        return good, kept

    def multiple_choice_items(self, rng: random.Random, n: int) -> list[dict]:
        """`n` items on `n` different prompts (the prompt distribution repeats a few of its prompts, e.g. those with
        unparameterised instructions, often enough that 200 draws would hold duplicates)."""
        seen: set[str] = set()

        def fresh_prompt(rng: random.Random) -> str:
            for _ in range(1000):
                prompt = self.sample_prompt(rng)  # an instance's own sample_prompt (a region's view) if it has one
                if prompt not in seen:
                    seen.add(prompt)
                    return prompt
            raise RuntimeError(f"constraints: no new prompt in 1000 draws after {len(seen)} items")

        return multiple_choice_items(self.gold_reward, fresh_prompt, self.candidate_responses, rng, n)


def violating(spec: Spec, kind: str, rng: random.Random) -> Spec:
    """`spec` with instruction `kind` changed so that an answer rendered for it breaks the original one (for
    no_commas the change is the comma `Plan.render` adds)."""
    constraints = dict(spec.constraints)
    value = constraints[kind]
    if kind == "keywords":
        constraints[kind] = tuple(rng.sample([k for k in KEYWORDS if k not in value], 2))
    elif kind == "start_word":
        constraints[kind] = rng.choice([w for w in START_WORDS if w != value])
    elif kind == "end_mark":
        constraints[kind] = next(mark for mark in END_MARKS if mark != value)
    elif kind in ("lowercase", "quotes", "bullets"):  # answer as if not asked (quotes, bullets: see _variants)
        constraints.pop(kind)
    # no_commas, sentences: the same spec; `Plan.render`'s variant breaks them
    return Spec(spec.template, spec.topic, spec.length, constraints)


@dataclass(frozen=True)
class Plan:
    """Which bank sentences an answer uses: an opener and follow-ups. Rendering a plan for different specs
    gives answers that differ only where the specs differ (the lm-eval candidates)."""

    opener: str
    follow_ups: list

    @classmethod
    def draw(cls, spec: Spec, rng: random.Random) -> "Plan":
        c = spec.constraints
        n = c.get("sentences") or c.get("bullets") or rng.randint(1, 3)
        # one spare follow-up, so that a count one higher can be rendered with the same sentences
        return cls(rng.choice(OPENERS), rng.sample(FOLLOW_UPS, n))

    def render(self, spec: Spec, topic: str, variant: str | None = None) -> str:
        """The plan's answer to `spec`, about `topic`. `variant`: the same answer with the first two sentences
        joined by ", and" ("join") or " and " ("and"): one word more, one sentence fewer; or with ", of course"
        ending the opener ("aside"): two words more, a comma."""
        c = spec.constraints
        n = c.get("sentences") or c.get("bullets") or len(self.follow_ups)
        sentences = [self.opener.format(topic=topic)] + self.follow_ups[: max(0, n - 1)]
        if "keywords" in c:
            sentences[-1 if n > 1 else 0] = KEYWORD_SENTENCE.format(*c["keywords"])
            if n == 1:  # the one sentence must still name the topic
                sentences[0] = sentences[0][:-1] + f" about {topic}."
        if "end_mark" in c:
            sentences[-1] = sentences[-1][:-1] + c["end_mark"]
        if variant in ("join", "and") and len(sentences) > 1:
            second = sentences.pop(1)
            joint = ", and " if variant == "join" else " and "
            sentences[0] = f"{sentences[0][:-1]}{joint}{second[0].lower()}{second[1:]}"
        elif variant == "aside":
            sentences[0] = f"{sentences[0][:-1]}, of course{sentences[0][-1]}"
        if "start_word" in c:
            first = sentences[0] if sentences[0].startswith("I ") else sentences[0][0].lower() + sentences[0][1:]
            sentences[0] = f"{c['start_word']} {first}"
        text = "\n".join(f"- {s}" for s in sentences) if "bullets" in c else " ".join(sentences)
        if "lowercase" in c:
            text = text.lower()
        if "quotes" in c:
            text = f'"{text}"'
        return text
