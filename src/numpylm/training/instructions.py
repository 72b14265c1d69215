"""numpylm's own instruction data set: four small tasks to fine-tune on, generated, not copied.

    Count from 3 to 7.                      -> 3 4 5 6 7
    Reverse the letters: c a t              -> t a c
    Which is larger, 41 or 17?              -> 41
    What is 12 plus 7?                      -> 19

Each task has a rule, so a model that learns it answers cases it has never seen. To measure
that, every case has a *key* (the two numbers, the word) and a fixed share of the keys is held
out: held-out examples use only those keys, training examples never do. "What is 3 plus 5?"
and "What is 5 plus 3?" share a key, so a held-out sum is not seen in either order.

The letters of a word are written apart ("c a t"): a BPE tokenizer turns a whole word into a
few opaque tokens, but " c", " a", " t" are one token each, so reversing becomes reordering
tokens, which a small model can learn.

Run ``python -m numpylm.training.instructions DIR`` to write ``DIR/train.jsonl`` and
``DIR/held_out.jsonl``; the same seed always gives the same files.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .finetune import Example, write_jsonl

Key = tuple[int, ...] | str
Task = Callable[[np.random.Generator], tuple[Key, Example]]


def count_task(rng: np.random.Generator) -> tuple[Key, Example]:
    """Count from a in [0, 50] on, 2 to 7 numbers."""
    a = int(rng.integers(0, 51))
    b = a + int(rng.integers(1, 7))
    return (a, b), Example(f"Count from {a} to {b}.", " ".join(str(i) for i in range(a, b + 1)))


def reverse_task(rng: np.random.Generator) -> tuple[Key, Example]:
    """Reverse a made-up word of 3 to 5 lowercase letters, written with spaces."""
    letters = [chr(ord("a") + int(i)) for i in rng.integers(0, 26, size=int(rng.integers(3, 6)))]
    word = "".join(letters)
    return word, Example(f"Reverse the letters: {' '.join(letters)}", " ".join(reversed(letters)))


def compare_task(rng: np.random.Generator) -> tuple[Key, Example]:
    """The larger of two different numbers in [0, 99]."""
    a, b = (int(v) for v in rng.choice(100, size=2, replace=False))
    return (min(a, b), max(a, b)), Example(f"Which is larger, {a} or {b}?", str(max(a, b)))


def add_task(rng: np.random.Generator) -> tuple[Key, Example]:
    """The sum of two numbers in [0, 24]."""
    a, b = (int(v) for v in rng.integers(0, 25, size=2))
    return (min(a, b), max(a, b)), Example(f"What is {a} plus {b}?", str(a + b))


TASKS: dict[str, Task] = {
    "count": count_task,
    "reverse": reverse_task,
    "compare": compare_task,
    "add": add_task,
}


def is_held_out(task: str, key: Key, seed: int, fraction: float) -> bool:
    """Whether a key belongs to the held-out share: a hash of (seed, task, key), so the split
    does not depend on which examples happen to be drawn."""
    digest = hashlib.sha256(f"{seed}/{task}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") < fraction * 2**64


def make_instructions(
    n_train: int = 4000,
    n_held_out: int = 200,
    *,
    seed: int = 0,
    held_out_fraction: float = 0.2,
    tasks: Sequence[str] = tuple(TASKS),
) -> tuple[list[Example], list[Example]]:
    """Draw ``n_train`` training and ``n_held_out`` held-out examples, shared evenly among
    ``tasks``.

    Training examples may repeat (a task can have few keys); held-out examples are distinct,
    one per key, and no held-out key appears in training.

    Returns:
        (train, held_out); training examples in random order, held-out ones task by task.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    for name, n in (("n_train", n_train), ("n_held_out", n_held_out)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {n!r}")
    rng = np.random.default_rng(seed)
    train: list[Example] = []
    held_out: list[Example] = []
    for i, name in enumerate(tasks):
        # the first tasks take the remainder, so the totals are exact
        want_train = n_train // len(tasks) + (i < n_train % len(tasks))
        want_held = n_held_out // len(tasks) + (i < n_held_out % len(tasks))
        task_train: list[Example] = []
        task_held: dict[Key, Example] = {}
        for _ in range(1000 * (want_train + want_held) + 1000):
            if len(task_train) >= want_train and len(task_held) >= want_held:
                break
            key, example = TASKS[name](rng)
            if not is_held_out(name, key, seed, held_out_fraction):
                if len(task_train) < want_train:
                    task_train.append(example)
            elif len(task_held) < want_held:
                task_held.setdefault(key, example)
        else:
            raise ValueError(
                f"task {name!r} has too few held-out cases for {want_held} distinct examples; "
                "ask for fewer held-out examples or a larger held_out_fraction"
            )
        train += task_train
        held_out += task_held.values()
    return [train[j] for j in rng.permutation(len(train))], held_out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m numpylm.training.instructions",
        description="Write numpylm's instruction data set: DIR/train.jsonl and "
        "DIR/held_out.jsonl (held-out cases never appear in training).",
    )
    parser.add_argument("out", metavar="DIR", help="where to write the two files")
    parser.add_argument("--train", type=int, default=4000, metavar="N", help="(%(default)s)")
    parser.add_argument("--held-out", type=int, default=200, metavar="N", help="(%(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="(%(default)s)")
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help="comma-separated subset (%(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        train, held_out = make_instructions(
            args.train, args.held_out, seed=args.seed, tasks=args.tasks.split(",")
        )
    except ValueError as e:
        parser.error(str(e))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, examples in (("train.jsonl", train), ("held_out.jsonl", held_out)):
        print(f"{write_jsonl(out / name, examples)}: {len(examples)} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
