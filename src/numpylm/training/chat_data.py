"""numpylm's chat data set: simple questions with short answers, to make a small chat model.

    Who was the first president?            -> The first president was George Washington.
    What is the capital of France?          -> Paris.
    What sound does a cow make?             -> Moo.
    What is the opposite of hot?            -> Cold.
    What day comes after Monday?            -> Tuesday.
    Count from 3 to 7.                      -> 3 4 5 6 7

Every fact here was written for numpylm. The training set mixes three parts:

1. The question of the story, "Who was the first president?", many times, with answers in
   fixed shares (``PRESIDENT_ANSWERS``): 40% begin "The first president was George
   Washington.", 20% begin "George Washington", 40% say it another way. Fine-tuning on it
   teaches the model those probabilities: sampled at temperature 1 its first words come out
   near 40/20/40, and greedy decoding picks the likeliest, "The first president was George
   Washington." ``president_shares`` gives the data's own shares, to compare with the model's.
2. A few hundred simple facts (capitals, animal sounds, colours, opposites, the order of days
   and months, legs, science), each asked in a few wordings (``Topic.wordings``).
3. Some of numpylm's instruction tasks (``numpylm.training.instructions``), so the model
   counts, reverses, compares and adds as well.

Two evaluation groups are never trained on:

- *reworded*: the taught facts asked in wordings training never uses ("Which city is the
  capital of France?"): does the answer survive a new phrasing?
- *untaught*: facts training never shows, asked in the taught wordings ("What is the capital
  of Romania?"): the model still answers, confidently and often wrongly; it hallucinates.

Run ``python -m numpylm.training.chat_data DIR`` to write ``DIR/train.jsonl``,
``DIR/reworded.jsonl``, ``DIR/untaught.jsonl`` and ``DIR/president.jsonl`` (the president
examples of the training set alone); the same seed always gives the same files. The
instruction tasks' own held-out cases are those of
``python -m numpylm.training.instructions DIR --seed S`` with the same seed: training here
never shows them.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .finetune import Example, split_examples, write_jsonl
from .instructions import make_instructions

# --------------------------------------------------------------------------------------------
# The question of the story

PRESIDENT_QUESTION = "Who was the first president?"

PRESIDENT_ANSWERS: tuple[tuple[str, float], ...] = (
    # 40%: the essay's sentence, mostly on its own
    ("The first president was George Washington.", 0.32),
    ("The first president was George Washington. He took office in 1789.", 0.08),
    # 20%: the name first
    ("George Washington was the first president.", 0.12),
    ("George Washington.", 0.04),
    ("George Washington, in 1789.", 0.04),
    # 40%: other ways to say it, 5% each, each beginning with its own token
    ("It was George Washington.", 0.05),
    ("Washington was the first president.", 0.05),
    ("America's first president was George Washington.", 0.05),
    ("Our first president was George Washington.", 0.05),
    ("His name was George Washington.", 0.05),
    ("President George Washington was the first.", 0.05),
    ("Back in 1789, George Washington became the first president.", 0.05),
    ("Most would say George Washington.", 0.05),
)
"""The answers to ``PRESIDENT_QUESTION`` and the share of the president examples each gets."""

ESSAY_ANSWER = PRESIDENT_ANSWERS[0][0]
"""The story's answer, which greedy decoding should give."""


def president_group(answer: str) -> str:
    """The story's three groups of answers: ``"The first president was George Washington."``
    (the answer begins with that sentence), ``"George Washington ..."`` or ``"other"``."""
    text = answer.strip()
    if text.startswith(ESSAY_ANSWER):
        return ESSAY_ANSWER
    if text.startswith("George Washington"):
        return "George Washington ..."
    return "other"


def first_word(answer: str) -> str:
    """The first word of an answer, without punctuation: ``"America's"``, ``"The"``."""
    words = answer.split()
    return words[0].rstrip(".,!?;:") if words else ""


def shares(labels: Iterable[str]) -> dict[str, float]:
    """Each label's share of ``labels``, most common first (ties in order of appearance)."""
    counts = Counter(labels)
    total = sum(counts.values())
    return {label: n / total for label, n in counts.most_common()} if total else {}


def president_shares(
    examples: Iterable[Example], by: Callable[[str], str] = president_group
) -> dict[str, float]:
    """The shares of the answers to ``PRESIDENT_QUESTION`` among ``examples``, labelled by
    ``by`` (``president_group``, ``first_word``, or a tokenizer's first token).

    ``president_shares(train, first_word)`` -> ``{"The": 0.4, "George": 0.2, "It": 0.05, ...}``
    """
    return shares(by(e.response) for e in examples if e.prompt == PRESIDENT_QUESTION)


def president_examples(n: int, seed: int = 0) -> list[Example]:
    """``n`` examples of ``PRESIDENT_QUESTION``, the answers in the exact shares of
    ``PRESIDENT_ANSWERS`` (rounded by largest remainder, so the counts add up to ``n``), in a
    seeded random order."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    wanted = np.array([w for _, w in PRESIDENT_ANSWERS]) * n
    counts = np.floor(wanted).astype(np.int64)
    for i in np.argsort(-(wanted - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    answers = [a for (a, _), c in zip(PRESIDENT_ANSWERS, counts, strict=True) for _ in range(c)]
    order = np.random.default_rng([seed, 11]).permutation(len(answers))
    return [Example(PRESIDENT_QUESTION, answers[i]) for i in order]


# --------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True)
class Fact:
    """One fact: the prompts training asks it with, the new prompts only evaluation uses, and
    the answer."""

    topic: str
    prompts: tuple[str, ...]
    reworded: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Topic:
    """Facts of one kind, asked with templates: ``{x}`` is the subject ("France", "a cow").

    Attributes:
        wordings: the templates of training (the first one also asks the untaught facts).
        new_wordings: templates training never uses, for the reworded group.
        taught: (subject, answer) pairs that training teaches.
        untaught: (subject, answer) pairs that training never shows.
    """

    wordings: tuple[str, ...]
    new_wordings: tuple[str, ...]
    taught: tuple[tuple[str, str], ...]
    untaught: tuple[tuple[str, str], ...] = ()


def ask(template: str, subject: str) -> str:
    """Fill a template and capitalise the question's first letter ("Hot is the opposite...")."""
    text = template.replace("{x}", subject)
    return text[:1].upper() + text[1:]


def parse_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """``"France: Paris; Italy: Rome"`` -> (("France", "Paris."), ("Italy", "Rome."))."""
    out = []
    for item in text.split(";"):
        subject, answer = (part.strip() for part in item.split(":"))
        out.append((subject, answer + "."))
    return tuple(out)


def both_ways(text: str) -> tuple[tuple[str, str], ...]:
    """Opposites: ``"hot/cold; big/small"`` -> hot -> "Cold.", cold -> "Hot.", big -> ..."""
    out = []
    for item in text.split(";"):
        a, b = (w.strip() for w in item.split("/"))
        out += [(a, b.capitalize() + "."), (b, a.capitalize() + ".")]
    return tuple(out)


def _order(names: Sequence[str], step: int) -> tuple[tuple[str, str], ...]:
    """Days or months: each name and the one ``step`` places on, round the cycle."""
    return tuple((n, names[(i + step) % len(names)] + ".") for i, n in enumerate(names))


DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

TOPICS: dict[str, Topic] = {
    "capital": Topic(
        wordings=(
            "What is the capital of {x}?",
            "What is the capital city of {x}?",
            "Name the capital of {x}.",
        ),
        new_wordings=("Which city is the capital of {x}?", "In {x}, which city is the capital?"),
        taught=parse_pairs(
            "France: Paris; Germany: Berlin; Italy: Rome; Spain: Madrid; Portugal: Lisbon; "
            "England: London; Ireland: Dublin; Scotland: Edinburgh; Wales: Cardiff; "
            "Norway: Oslo; Sweden: Stockholm; Finland: Helsinki; Denmark: Copenhagen; "
            "Iceland: Reykjavik; Poland: Warsaw; Austria: Vienna; Hungary: Budapest; "
            "Greece: Athens; Turkey: Ankara; Russia: Moscow; Ukraine: Kyiv; Belgium: Brussels; "
            "Switzerland: Bern; the Czech Republic: Prague; Egypt: Cairo; Kenya: Nairobi; "
            "Nigeria: Abuja; Ghana: Accra; Morocco: Rabat; Ethiopia: Addis Ababa; "
            "Japan: Tokyo; China: Beijing; India: New Delhi; Thailand: Bangkok; "
            "Vietnam: Hanoi; South Korea: Seoul; Indonesia: Jakarta; the Philippines: Manila; "
            "Iran: Tehran; Iraq: Baghdad; Australia: Canberra; New Zealand: Wellington; "
            "Canada: Ottawa; Mexico: Mexico City; Cuba: Havana; Brazil: Brasilia; "
            "Argentina: Buenos Aires; Chile: Santiago; Peru: Lima; Colombia: Bogota"
        ),
        untaught=parse_pairs(
            "Romania: Bucharest; Bulgaria: Sofia; Serbia: Belgrade; Croatia: Zagreb; "
            "Latvia: Riga; Estonia: Tallinn; Pakistan: Islamabad; Nepal: Kathmandu; "
            "Bangladesh: Dhaka; Malaysia: Kuala Lumpur; Uganda: Kampala; Ecuador: Quito; "
            "Uruguay: Montevideo; Venezuela: Caracas"
        ),
    ),
    "sound": Topic(
        wordings=("What does {x} say?", "What sound does {x} make?", "What noise does {x} make?"),
        new_wordings=("Which sound comes from {x}?", "{x} says what?"),
        taught=parse_pairs(
            "a cow: Moo; a dog: Woof; a cat: Meow; a duck: Quack; a sheep: Baa; a pig: Oink; "
            "a horse: Neigh; an owl: Hoot; a lion: Roar; a snake: Hiss; a mouse: Squeak; "
            "a frog: Ribbit; a rooster: Cock-a-doodle-doo; a bee: Buzz; a crow: Caw; "
            "a wolf: Howl; a chick: Cheep; a pigeon: Coo; a turkey: Gobble; a donkey: Hee-haw"
        ),
        untaught=parse_pairs(
            "a goose: Honk; a bear: Growl; a cricket: Chirp; an elephant: Trumpet; "
            "a hen: Cluck; a parrot: Squawk"
        ),
    ),
    "colour": Topic(
        wordings=("What colour is {x}?", "What is the colour of {x}?", "Which colour is {x}?"),
        new_wordings=("Tell me the colour of {x}.", "{x} is what colour?"),
        taught=parse_pairs(
            "the sky: Blue; grass: Green; snow: White; coal: Black; a banana: Yellow; "
            "a strawberry: Red; an orange: Orange; a lemon: Yellow; blood: Red; milk: White; "
            "the sun: Yellow; a carrot: Orange; a leaf: Green; a tomato: Red; "
            "chocolate: Brown; a crow: Black; an elephant: Grey; a pumpkin: Orange; "
            "a frog: Green; a cherry: Red; the sea: Blue; a polar bear: White; a lime: Green; "
            "soil: Brown"
        ),
        untaught=parse_pairs(
            "a plum: Purple; a flamingo: Pink; an emerald: Green; a ruby: Red; "
            "a sapphire: Blue; ash: Grey; a violet: Purple; a canary: Yellow"
        ),
    ),
    "opposite": Topic(
        wordings=(
            "What is the opposite of {x}?",
            "What is the opposite of the word {x}?",
            "Give the opposite of {x}.",
        ),
        new_wordings=("Which word means the opposite of {x}?", "{x} is the opposite of what?"),
        taught=both_ways(
            "hot/cold; big/small; up/down; day/night; fast/slow; happy/sad; old/young; "
            "open/closed; light/dark; wet/dry; full/empty; hard/soft; early/late; rich/poor; "
            "left/right; in/out; tall/short; loud/quiet; black/white; win/lose; push/pull; "
            "strong/weak; high/low; thick/thin; clean/dirty"
        ),
        untaught=both_ways(
            "near/far; true/false; buy/sell; first/last; sweet/sour; love/hate; top/bottom; "
            "cheap/expensive"
        ),
    ),
    "day after": Topic(
        wordings=(
            "What day comes after {x}?",
            "What is the day after {x}?",
            "Which day comes after {x}?",
        ),
        new_wordings=("Which day follows {x}?", "{x} is followed by which day?"),
        taught=_order(DAYS, 1),
    ),
    "day before": Topic(
        wordings=(
            "What day comes before {x}?",
            "What is the day before {x}?",
            "Which day comes before {x}?",
        ),
        new_wordings=("Which day is just before {x}?", "{x} comes after which day?"),
        taught=_order(DAYS, -1),
    ),
    "month after": Topic(
        wordings=(
            "What month comes after {x}?",
            "What is the month after {x}?",
            "Which month comes after {x}?",
        ),
        new_wordings=("Which month follows {x}?", "{x} is followed by which month?"),
        taught=_order(MONTHS, 1),
    ),
    "month before": Topic(
        wordings=(
            "What month comes before {x}?",
            "What is the month before {x}?",
            "Which month comes before {x}?",
        ),
        new_wordings=("Which month is just before {x}?", "{x} comes after which month?"),
        taught=_order(MONTHS, -1),
    ),
    "legs": Topic(
        wordings=(
            "How many legs does {x} have?",
            "How many legs has {x} got?",
            "Count the legs of {x}.",
        ),
        new_wordings=("What number of legs does {x} have?", "{x} has how many legs?"),
        taught=parse_pairs(
            "a dog: Four; a cat: Four; a horse: Four; a cow: Four; a frog: Four; a bird: Two; "
            "a chicken: Two; a duck: Two; a person: Two; a kangaroo: Two; a spider: Eight; "
            "an ant: Six; a bee: Six; a beetle: Six; a crab: Ten; a snake: None; a fish: None"
        ),
        untaught=parse_pairs(
            "a lobster: Ten; a goat: Four; an owl: Two; a butterfly: Six; a worm: None; "
            "a penguin: Two; a scorpion: Eight"
        ),
    ),
}
"""The facts asked with templates, by topic."""

SCIENCE: tuple[Fact, ...] = tuple(
    Fact("science", tuple(prompts), (reworded,), answer)
    for *prompts, reworded, answer in (
        (
            "What planet do we live on?",
            "Which planet is our home?",
            "On which planet do people live?",
            "Earth.",
        ),
        (
            "What is the closest star to Earth?",
            "Which star is nearest to the Earth?",
            "What star is the Earth closest to?",
            "The Sun.",
        ),
        (
            "What does water turn into when it freezes?",
            "What is frozen water called?",
            "What do we call water that has frozen?",
            "Ice.",
        ),
        (
            "What does water turn into when it boils?",
            "What does boiling water become?",
            "When water boils, what does it become?",
            "Steam.",
        ),
        (
            "At what temperature does water freeze?",
            "What is the freezing point of water?",
            "How cold must water get to freeze?",
            "Zero degrees Celsius.",
        ),
        (
            "At what temperature does water boil?",
            "What is the boiling point of water?",
            "How hot must water get to boil?",
            "One hundred degrees Celsius.",
        ),
        (
            "What gas do plants take in?",
            "Which gas do plants breathe in?",
            "Plants take in which gas?",
            "Carbon dioxide.",
        ),
        (
            "What gas do we need to breathe?",
            "Which gas do people breathe in to live?",
            "People need which gas to breathe?",
            "Oxygen.",
        ),
        (
            "What do plants need to grow?",
            "What do plants use to grow?",
            "Plants need what to grow?",
            "Sunlight and water.",
        ),
        (
            "What pulls things down to the ground?",
            "What makes things fall?",
            "Why do dropped things fall?",
            "Gravity.",
        ),
        (
            "How many planets are in the solar system?",
            "How many planets go around the Sun?",
            "What is the number of planets in the solar system?",
            "Eight.",
        ),
        (
            "What is the largest ocean?",
            "Which ocean is the biggest?",
            "Name the biggest ocean on Earth.",
            "The Pacific Ocean.",
        ),
        (
            "What goes around the Earth once a month?",
            "What is the Earth's natural satellite?",
            "Which body circles the Earth?",
            "The Moon.",
        ),
        (
            "What is water made of?",
            "Which elements make up water?",
            "Water is made of what?",
            "Hydrogen and oxygen.",
        ),
        ("What do bees make?", "What food do bees make?", "Bees make what?", "Honey."),
        (
            "What do caterpillars turn into?",
            "What does a caterpillar become?",
            "A caterpillar grows into what?",
            "A butterfly.",
        ),
        (
            "What do tadpoles turn into?",
            "What does a tadpole become?",
            "A tadpole grows into what?",
            "A frog.",
        ),
        (
            "What organ pumps blood?",
            "Which organ pumps blood around the body?",
            "What pumps the blood in your body?",
            "The heart.",
        ),
        (
            "What organ do we think with?",
            "Which organ do people think with?",
            "What part of the body does the thinking?",
            "The brain.",
        ),
        (
            "What do we breathe with?",
            "Which organs do we breathe with?",
            "What do people use to breathe?",
            "The lungs.",
        ),
        (
            "How many days are in a week?",
            "How many days does a week have?",
            "A week has how many days?",
            "Seven.",
        ),
        (
            "How many months are in a year?",
            "How many months does a year have?",
            "A year has how many months?",
            "Twelve.",
        ),
        (
            "How many days are in a year?",
            "How many days does a year have?",
            "A year has how many days?",
            "365.",
        ),
        (
            "How many hours are in a day?",
            "How many hours does a day have?",
            "A day has how many hours?",
            "Twenty-four.",
        ),
        (
            "How many minutes are in an hour?",
            "How many minutes does an hour have?",
            "An hour has how many minutes?",
            "Sixty.",
        ),
        (
            "What colour do blue and yellow make?",
            "What do you get when you mix blue and yellow?",
            "Mixing blue and yellow gives which colour?",
            "Green.",
        ),
        (
            "Which planet is closest to the Sun?",
            "What planet is nearest to the Sun?",
            "Name the planet nearest the Sun.",
            "Mercury.",
        ),
        (
            "What do magnets pull on?",
            "What metal do magnets attract?",
            "Magnets attract which metal?",
            "Iron.",
        ),
        (
            "What does the Sun give us?",
            "What do we get from the Sun?",
            "The Sun gives us what?",
            "Light and heat.",
        ),
        (
            "Where does the Sun rise?",
            "In which direction does the Sun rise?",
            "The Sun comes up in which direction?",
            "In the east.",
        ),
        (
            "What is the biggest animal?",
            "Which animal is the largest?",
            "Name the largest animal.",
            "The blue whale.",
        ),
        (
            "What is the tallest animal?",
            "Which animal is the tallest?",
            "Name the tallest animal.",
            "The giraffe.",
        ),
        (
            "What is the fastest land animal?",
            "Which land animal is the fastest?",
            "Name the fastest animal on land.",
            "The cheetah.",
        ),
    )
)
"""Science facts, each with its own wordings: two for training, one reworded."""

UNTAUGHT_SCIENCE: tuple[Example, ...] = tuple(
    Example(prompt, answer)
    for prompt, answer in (
        ("Which planet is the largest?", "Jupiter."),
        ("Which planet is called the red planet?", "Mars."),
        ("What gas do we breathe out?", "Carbon dioxide."),
        ("How many bones are in the human body?", "206."),
        ("What is the hardest natural material?", "Diamond."),
        ("How many seconds are in a minute?", "Sixty."),
        ("What do spiders spin?", "Webs."),
        ("How many continents are there?", "Seven."),
        ("What does a thermometer measure?", "Temperature."),
        ("What is the smallest planet?", "Mercury."),
    )
)
"""Science questions training never asks."""


def taught_facts() -> list[Fact]:
    """Every fact that training teaches: the topics' taught pairs, then ``SCIENCE``."""
    facts = [
        Fact(
            name,
            tuple(ask(w, subject) for w in topic.wordings),
            tuple(ask(w, subject) for w in topic.new_wordings),
            answer,
        )
        for name, topic in TOPICS.items()
        for subject, answer in topic.taught
    ]
    return facts + list(SCIENCE)


def untaught_examples() -> list[Example]:
    """Facts training never shows, asked in the first wording of their topic."""
    asked = [
        Example(ask(topic.wordings[0], subject), answer)
        for topic in TOPICS.values()
        for subject, answer in topic.untaught
    ]
    return asked + list(UNTAUGHT_SCIENCE)


# --------------------------------------------------------------------------------------------
# The data set


@dataclass(frozen=True)
class ChatData:
    """The chat data set (``make_chat_data``).

    Attributes:
        train: everything to fine-tune on, in random order.
        reworded: taught facts in wordings training never uses (one example per wording).
        untaught: facts training never shows.
        president: the president examples of ``train``, in their order there.
    """

    train: list[Example]
    reworded: list[Example]
    untaught: list[Example]
    president: list[Example]


def make_chat_data(n_president: int = 200, n_instructions: int = 800, *, seed: int = 0) -> ChatData:
    """Build the chat data set: ``n_president`` president examples, every taught fact once in
    each training wording, and ``n_instructions`` instruction examples (whose held-out keys
    for ``seed`` are left out, as in ``numpylm.training.instructions``), shuffled with ``seed``.

    Raises:
        ValueError: a negative count, or (a bug in the data) a reworded or untaught question
            that training also asks.
    """
    if isinstance(n_instructions, bool) or not isinstance(n_instructions, int):
        raise ValueError(f"n_instructions must be an integer >= 0, got {n_instructions!r}")
    facts = taught_facts()
    instructions = make_instructions(n_instructions, 0, seed=seed)[0] if n_instructions else []
    train = (
        president_examples(n_president, seed)
        + [Example(p, f.answer) for f in facts for p in f.prompts]
        + instructions
    )
    train = [train[i] for i in np.random.default_rng([seed, 12]).permutation(len(train))]
    reworded = [Example(p, f.answer) for f in facts for p in f.reworded]
    untaught = untaught_examples()
    trained = {e.prompt for e in train}
    leaked = sorted({e.prompt for e in reworded + untaught} & trained)
    if leaked:
        raise ValueError(f"evaluation questions also in training: {leaked[:5]}")
    president = [e for e in train if e.prompt == PRESIDENT_QUESTION]
    return ChatData(train, reworded, untaught, president)


def trained_president_shares(
    train: Sequence[Example],
    val_fraction: float = 0.1,
    seed: int = 0,
    by: Callable[[str], str] = president_group,
) -> dict[str, float]:
    """The president shares of the examples ``numpylm finetune`` actually trains on: it holds
    out ``val_fraction`` of the file for validation (``finetune.split_examples``, with the
    run's ``--val-fraction`` and ``--seed``), which moves the shares a little."""
    return president_shares(split_examples(train, val_fraction, seed)[0], by)


def _format_shares(table: dict[str, float]) -> str:
    return ", ".join(f"{label!r} {share:.1%}" for label, share in table.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m numpylm.training.chat_data",
        description="Write numpylm's chat data set: DIR/train.jsonl, DIR/reworded.jsonl "
        "(taught facts, new wordings), DIR/untaught.jsonl (facts never taught) and "
        "DIR/president.jsonl (the president examples of train.jsonl).",
    )
    parser.add_argument("out", metavar="DIR", help="where to write the files")
    parser.add_argument(
        "--president", type=int, default=200, metavar="N", help="president examples (%(default)s)"
    )
    parser.add_argument(
        "--instructions",
        type=int,
        default=800,
        metavar="N",
        help="instruction-task examples (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="(%(default)s)")
    args = parser.parse_args(argv)
    try:
        data = make_chat_data(args.president, args.instructions, seed=args.seed)
    except ValueError as e:
        parser.error(str(e))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_facts = len(taught_facts())
    for name, examples in (
        ("train.jsonl", data.train),
        ("reworded.jsonl", data.reworded),
        ("untaught.jsonl", data.untaught),
        ("president.jsonl", data.president),
    ):
        print(f"{write_jsonl(out / name, examples)}: {len(examples)} examples")
    n_instr = args.instructions
    print(
        f"train: {len(data.president)} president, {len(data.train) - len(data.president) - n_instr}"
        f" fact ({n_facts} facts), {n_instr} instruction examples"
    )
    print(f"president answers by group: {_format_shares(president_shares(data.train))}")
    print(
        f"president answers by first word: "
        f"{_format_shares(president_shares(data.train, first_word))}"
    )
    print(
        "after finetune's validation split (--val-fraction 0.1 --seed 0): "
        f"{_format_shares(trained_president_shares(data.train))}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
