"""numpylm's preference data set: teaching the chat model to say "I don't know."

The built-in chat model (``numpylm.load("chat")``, fine-tuned on ``chat_data``) answers a
question it was never taught in the taught form, and wrongly: "What is the capital of
Pakistan?" -> "Tokyo.". This data set asks it, through DPO (``numpylm.training.align``), to prefer
"I don't know." to such an answer, and to keep the answers of the facts it was taught:

    {"prompt": "What is the capital of Albania?", "chosen": "I don't know.", "rejected": "Tokara."}
    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "I don't know."}

1. *Untaught* pairs: facts ``chat_data`` never teaches, all written for this file
   (``UNTAUGHT``: capitals, animal sounds, colours, opposites, legs, science), asked in the
   taught wordings. "I don't know." is chosen; the rejected answer is either the chat model's
   own greedy answer (``rejected="own"``: what it really says, when that is wrong) or another
   answer of the same topic (``rejected="other"``: "Rome." for Albania), with no model run.
2. *Taught* pairs: the taught facts, each in its training wordings, their answer chosen over
   "I don't know.", so that the model does not learn to say it to everything. A share of the
   taught facts (``held_out``) is kept out, to measure on.

Measured on what no pair shows (``evaluate_alignment``): the 61 untaught facts of
``chat_data.untaught_examples`` (the chat model card's group (b)), the held-out taught facts,
and the instruction tasks' held-out cases as ordinary prompts for the KL from the reference.

Run ``python -m numpylm.training.preference_data DIR`` to write ``DIR/pairs.jsonl`` (training
pairs), ``DIR/held_out_pairs.jsonl``, ``DIR/held_out_taught.jsonl`` and ``DIR/untaught.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import checks
from ..generation.batching import generate_batch
from ..models.gpt2.model import GPT
from ..tokens.tokenizer import Tokenizer
from .align import Pair, pair_logprobs, preference_figures, read_pairs, write_pairs
from .chat_data import TOPICS, ask, both_ways, parse_pairs, untaught_examples
from .finetune import (
    TEMPLATE,
    Example,
    encode_example,
    evaluate_sft,
    format_prompt,
    pad_batch,
    read_jsonl,
    write_jsonl,
)
from .instructions import make_instructions

IDK = "I don't know."
"""The answer to prefer when the model was never taught the fact."""

UNTAUGHT: dict[str, tuple[tuple[str, str], ...]] = {
    "capital": parse_pairs(
        "Albania: Tirana; Slovakia: Bratislava; Slovenia: Ljubljana; Lithuania: Vilnius; "
        "Belarus: Minsk; Moldova: Chisinau; Montenegro: Podgorica; Cyprus: Nicosia; "
        "Malta: Valletta; Georgia: Tbilisi; Armenia: Yerevan; Azerbaijan: Baku; "
        "Uzbekistan: Tashkent; Afghanistan: Kabul; Sri Lanka: Colombo; Cambodia: Phnom Penh; "
        "Laos: Vientiane; Mongolia: Ulaanbaatar; Saudi Arabia: Riyadh; Syria: Damascus; "
        "Jordan: Amman; Lebanon: Beirut; Qatar: Doha; Oman: Muscat; Tunisia: Tunis; "
        "Algeria: Algiers; Libya: Tripoli; Sudan: Khartoum; Senegal: Dakar; Mali: Bamako; "
        "Zambia: Lusaka; Zimbabwe: Harare; Angola: Luanda; Namibia: Windhoek; "
        "Botswana: Gaborone; Rwanda: Kigali; Somalia: Mogadishu; Paraguay: Asuncion; "
        "Panama: Panama City; Jamaica: Kingston; Honduras: Tegucigalpa; Nicaragua: Managua; "
        "Haiti: Port-au-Prince; Fiji: Suva"
    ),
    "sound": parse_pairs(
        "a seal: Bark; a hyena: Laugh; a dolphin: Click; a magpie: Chatter; a hawk: Screech; "
        "a cuckoo: Cuckoo; a camel: Grunt; a raven: Croak; a mosquito: Whine; a dove: Coo; "
        "a monkey: Ooh-ooh; a rattlesnake: Rattle"
    ),
    "colour": parse_pairs(
        "an aubergine: Purple; a cucumber: Green; a swan: White; a raven: Black; "
        "a sunflower: Yellow; a fire engine: Red; a pearl: White; an avocado: Green; "
        "a daffodil: Yellow; a panda: Black and white; a zebra: Black and white; "
        "a lavender flower: Purple; a flamingo feather: Pink; a pine tree: Green"
    ),
    "opposite": both_ways(
        "give/take; start/finish; friend/enemy; always/never; remember/forget; asleep/awake; "
        "inside/outside; north/south; east/west; laugh/cry; alive/dead; smooth/rough; "
        "deep/shallow; wide/narrow; safe/dangerous; easy/difficult"
    ),
    "legs": parse_pairs(
        "a camel: Four; a tiger: Four; a zebra: Four; a rabbit: Four; a flamingo: Two; "
        "an ostrich: Two; an eagle: Two; a parrot: Two; a grasshopper: Six; a fly: Six; "
        "a tick: Eight; a shrimp: Ten; a whale: None; an eel: None; a slug: None"
    ),
}
"""Facts neither ``chat_data`` nor its evaluation groups ask, by topic of ``chat_data.TOPICS``
(asked in that topic's training wordings)."""

UNTAUGHT_SCIENCE: tuple[tuple[str, str], ...] = (
    ("What is the largest desert?", "The Sahara."),
    ("What is the longest river?", "The Nile."),
    ("What is the highest mountain?", "Mount Everest."),
    ("How many sides does a triangle have?", "Three."),
    ("How many wheels does a bicycle have?", "Two."),
    ("What do chickens lay?", "Eggs."),
    ("What does a compass show?", "North."),
    ("What is the centre of an atom called?", "The nucleus."),
    ("Which planet has rings?", "Saturn."),
    ("What do cows drink?", "Water."),
    ("What is the closest planet to Earth?", "Venus."),
    ("How many legs does an insect have?", "Six."),
)
"""Science questions neither ``chat_data`` nor its evaluation groups ask."""


@dataclass(frozen=True)
class PreferenceData:
    """The preference data set (``make_preference_data``).

    Attributes:
        pairs: the training pairs, in a seeded random order.
        held_out_pairs: pairs for measuring preference accuracy, on prompts no training pair
            asks: the untaught facts of ``chat_data`` and the held-out taught facts.
        held_out_taught: the held-out taught facts (training wordings), with their answers.
        untaught: ``chat_data.untaught_examples()``, with their right answers.
    """

    pairs: list[Pair]
    held_out_pairs: list[Pair]
    held_out_taught: list[Example]
    untaught: list[Example]


def untaught_questions() -> list[Example]:
    """The untaught facts that training pairs ask: every ``UNTAUGHT`` subject in each of its
    topic's training wordings, then ``UNTAUGHT_SCIENCE``; with their right answers."""
    asked = [
        Example(ask(wording, subject), answer)
        for topic, facts in UNTAUGHT.items()
        for subject, answer in facts
        for wording in TOPICS[topic].wordings
    ]
    return asked + [Example(q, a) for q, a in UNTAUGHT_SCIENCE]


def is_held_out(answer_key: str, seed: int, fraction: float) -> bool:
    """Whether a taught fact is held out of the pairs: a hash of (seed, fact), so the split
    does not depend on the order of the facts."""
    digest = hashlib.sha256(f"{seed}/{answer_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") < fraction * 2**64


def make_preference_data(
    model: GPT | None = None,
    tokenizer: Tokenizer | None = None,
    *,
    rejected: str = "own",
    held_out: float = 0.2,
    template: str = TEMPLATE,
    seed: int = 0,
) -> PreferenceData:
    """Build the preference data set (see the module docstring).

    Args:
        model, tokenizer: the model whose answers the untaught pairs reject (``rejected="own"``)
            and held-out pairs reject; the chat model when None.
        rejected: ``"own"``, the model's greedy answers (pairs where it happens to be right are
            left out), or ``"other"``, a random other answer of the same topic.
        held_out: the share of the taught facts kept out of the pairs.
    """
    if rejected not in ("own", "other"):
        raise ValueError(f"rejected must be 'own' or 'other', got {rejected!r}")
    checks.in_range(
        "held_out", checks.as_float("held_out", held_out), "in [0, 1)", 0 <= held_out < 1
    )
    checks.whole_number("seed", seed, 0)
    if model is None or tokenizer is None:
        from .finetune import load_base

        model, tokenizer = load_base("chat", "float32")
    from .chat_data import taught_facts

    rng = np.random.default_rng([seed, 21])
    facts = taught_facts()
    kept = [f for f in facts if not is_held_out(f.prompts[0], seed, held_out)]
    out = [f for f in facts if is_held_out(f.prompts[0], seed, held_out)]
    answers_by_topic: dict[str, list[str]] = {}
    for f in facts:
        answers_by_topic.setdefault(f.topic, []).append(f.answer)

    untaught = untaught_questions()
    if rejected == "own":
        said = greedy_answers(model, tokenizer, untaught, template)
        wrong = [
            Pair(e.prompt, IDK, a)
            for e, a in zip(untaught, said, strict=True)
            if _wrong(a, e.response)
        ]
    else:
        topic_of = {e.prompt: t for t, fs in UNTAUGHT.items() for e in _topic_questions(t, fs)}
        wrong = []
        for e in untaught:
            pool = answers_by_topic[topic_of.get(e.prompt, "science")]
            choices = [a for a in pool if a != e.response]
            wrong.append(Pair(e.prompt, IDK, choices[int(rng.integers(len(choices)))]))
    taught = [Pair(p, f.answer, IDK) for f in kept for p in f.prompts]
    pairs = wrong + taught
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]

    evaluation = untaught_examples()
    said = greedy_answers(model, tokenizer, evaluation, template)
    held_out_pairs = [
        Pair(e.prompt, IDK, a)
        for e, a in zip(evaluation, said, strict=True)
        if _wrong(a, e.response)
    ] + [Pair(f.prompts[0], f.answer, IDK) for f in out]
    held_out_taught = [Example(p, f.answer) for f in out for p in f.prompts]
    return PreferenceData(pairs, held_out_pairs, held_out_taught, evaluation)


def _topic_questions(topic: str, facts: Sequence[tuple[str, str]]) -> list[Example]:
    return [Example(ask(w, s), a) for s, a in facts for w in TOPICS[topic].wordings]


def _wrong(said: str, right: str) -> bool:
    """A wrong, confident answer: neither the right one nor "I don't know."."""
    return said.strip() not in (right, IDK)


def greedy_answers(
    model: GPT, tokenizer: Tokenizer, examples: Sequence[Example], template: str = TEMPLATE
) -> list[str]:
    """The model's greedy answer to each example's prompt (``finetune.evaluate_sft``)."""
    return [a.strip() for a in evaluate_sft(model, tokenizer, examples, template=template).answers]


# --------------------------------------------------------------------------------------------
# Measuring


def answer_kl(
    policy: GPT,
    reference: GPT,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    template: str = TEMPLATE,
) -> float:
    """The mean KL(reference || policy) of the next-token distributions, in nats per token,
    along the reference's own greedy answers to ``prompts`` (its ``<|endoftext|>``
    included): how far the policy has moved from the reference on them."""
    eot = tokenizer.eot_id
    total, count = 0.0, 0
    for i in range(0, len(prompts), 32):
        encoded = [tokenizer.encode(format_prompt(p, template)) for p in prompts[i : i + 32]]
        rows = []
        for prompt, row in zip(
            encoded,
            generate_batch(reference, encoded, 24, eos_id=eot, temperature=0.0),
            strict=True,
        ):
            new = [int(t) for t in row[len(prompt) :]]
            new = new[: new.index(eot) + 1] if eot in new else new
            rows.append((prompt + new, len(prompt)))
        x, y = pad_batch(rows, eot)  # (b, T): y marks the answer positions
        counted = y >= 0
        logp_ref = _log_softmax(reference(x))[counted]  # (n, V)
        logp_pol = _log_softmax(policy(x))[counted]
        total += float((np.exp(logp_ref) * (logp_ref - logp_pol)).sum())
        count += int(counted.sum())
    return total / count


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def evaluate_alignment(
    policy: GPT,
    reference: GPT,
    tokenizer: Tokenizer,
    data: PreferenceData,
    beta: float,
    template: str = TEMPLATE,
) -> dict[str, float]:
    """The figures of issue 17 for a policy against its reference, on held-out prompts only.

    Returns:
        ``preference_accuracy``: the share of ``held_out_pairs`` whose chosen answer's log-ratio
        is above the rejected one's (0 for the reference itself: every ratio is 0);
        ``prefers_chosen``: the share whose chosen answer the policy makes likelier than the
        rejected one (comparable before and after); ``reward_margin``: the mean margin;
        ``idk_untaught``: the share of the untaught facts answered exactly "I don't know.";
        ``right_untaught``: the share of them answered right; ``right_taught``: the share of
        the held-out taught facts answered right; ``idk_taught``: the share of those answered
        "I don't know."; ``kl_ordinary``: ``answer_kl`` on the instruction tasks' held-out
        prompts and the president question.
    """
    eot = tokenizer.eot_id
    rows = [
        tuple(
            encode_example(tokenizer, Example(p.prompt, a), template)
            for a in (p.chosen, p.rejected)
        )
        for p in data.held_out_pairs
    ]
    pol = pair_logprobs(policy, rows, 32, eot)  # type: ignore[arg-type]
    ref = pair_logprobs(reference, rows, 32, eot)  # type: ignore[arg-type]
    figures = preference_figures(pol, ref, beta)
    untaught = greedy_answers(policy, tokenizer, data.untaught, template)
    taught = greedy_answers(policy, tokenizer, data.held_out_taught, template)
    ordinary = [e.prompt for e in make_instructions(0, 200, seed=0)[1]] + [
        "Who was the first president?"
    ]
    return {
        "preference_accuracy": figures["val_accuracy"],
        "prefers_chosen": float((pol[:, 0] > pol[:, 1]).mean()),
        "reward_margin": figures["val_margin"],
        "idk_untaught": _share(a == IDK for a in untaught),
        "right_untaught": _share(
            a == e.response for a, e in zip(untaught, data.untaught, strict=True)
        ),
        "right_taught": _share(
            a == e.response for a, e in zip(taught, data.held_out_taught, strict=True)
        ),
        "idk_taught": _share(a == IDK for a in taught),
        "kl_ordinary": answer_kl(policy, reference, tokenizer, ordinary, template),
    }


def _share(flags: object) -> float:
    values = list(flags)  # type: ignore[call-overload]
    return sum(values) / len(values)


def read_preference_data(directory: str | os.PathLike[str]) -> PreferenceData:
    """The data set ``python -m numpylm.training.preference_data DIR`` wrote into ``directory``."""
    d = Path(directory)
    return PreferenceData(
        read_pairs(d / "pairs.jsonl"),
        read_pairs(d / "held_out_pairs.jsonl"),
        read_jsonl(d / "held_out_taught.jsonl"),
        read_jsonl(d / "untaught.jsonl"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m numpylm.training.preference_data",
        description="Write numpylm's preference data set for the chat model: DIR/pairs.jsonl "
        "(training pairs), DIR/held_out_pairs.jsonl, DIR/held_out_taught.jsonl, "
        "DIR/untaught.jsonl. With --measure MODEL, measure MODEL against the chat model on "
        "the data set in DIR instead (evaluate_alignment).",
    )
    parser.add_argument("out", metavar="DIR", help="where to write the files (or read them)")
    parser.add_argument(
        "--rejected",
        choices=["own", "other"],
        default="own",
        help="reject the chat model's own answers, or other answers of the topic (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="(%(default)s)")
    parser.add_argument("--measure", metavar="MODEL", help="a model to measure (e.g. a run)")
    parser.add_argument("--beta", type=float, default=0.1, help="for the rewards (%(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.measure:
        from .finetune import load_base

        reference, tokenizer = load_base("chat", "float32")
        policy, _ = load_base(args.measure, "float32")
        data = read_preference_data(out)
        figures = evaluate_alignment(policy, reference, tokenizer, data, args.beta)
        print(json.dumps({"model": args.measure, **figures}))
        return 0
    data = make_preference_data(rejected=args.rejected, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, items, what in (
        ("pairs.jsonl", data.pairs, "pairs"),
        ("held_out_pairs.jsonl", data.held_out_pairs, "pairs"),
    ):
        print(f"{write_pairs(out / name, items)}: {len(items)} {what}")
    for name, examples in (
        ("held_out_taught.jsonl", data.held_out_taught),
        ("untaught.jsonl", data.untaught),
    ):
        print(f"{write_jsonl(out / name, examples)}: {len(examples)} examples")
    n_idk = sum(p.chosen == IDK for p in data.pairs)
    print(f'pairs: {n_idk} untaught ("{IDK}" chosen), {len(data.pairs) - n_idk} taught')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
