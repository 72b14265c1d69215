"""Before and after: fine-tune the built-in Shakespeare model to answer simple questions.

    python examples/finetune_builtin.py                 # the built-in model
    python examples/finetune_builtin.py --model DIR     # any numpylm model directory or Hub id

1. writes numpylm's instruction data set (``numpylm.training.instructions``) to OUT/data: training
   examples, and held-out examples whose numbers and words training never shows;
2. asks the base model the held-out questions (greedy, in the template's format) and scores
   the answers: exact match, and whether the answer stopped with <|endoftext|>;
3. fine-tunes (``numpylm.training.finetune``) into OUT/model;
4. asks and scores again, and prints both, task by task.

The same, with the command line:

    python -m numpylm.training.instructions OUT/data
    numpylm eval-sft --data OUT/data/held_out.jsonl                        # before
    numpylm finetune --data OUT/data/train.jsonl --out OUT/model
    numpylm eval-sft --model OUT/model --data OUT/data/held_out.jsonl      # after
    numpylm generate --model OUT/model "Count from 3 to 7." --temperature 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from numpylm.io.loading import load
from numpylm.training.finetune import (
    Example,
    FinetuneConfig,
    SFTScore,
    evaluate_sft,
    finetune,
    write_jsonl,
)
from numpylm.training.instructions import make_instructions

TASK_OF_PREFIX = {"Count": "count", "Reverse": "reverse", "Which": "compare", "What": "add"}


def score_by_task(model_dir: str | None, held_out: list[Example], max_new_tokens: int) -> None:
    model, tokenizer = load(model_dir)
    score = evaluate_sft(model, tokenizer, held_out, max_new_tokens)
    print(f"  all        {_line(score)}")
    for prefix, task in TASK_OF_PREFIX.items():
        part = score.select(i for i, e in enumerate(held_out) if e.prompt.startswith(prefix))
        print(f"  {task:10} {_line(part)}")
    for e, answer, stopped in list(zip(held_out, score.answers, score.stopped, strict=True))[::50]:
        print(f"    {e.prompt!r} -> {answer + ('<|endoftext|>' if stopped else '...')!r}")


def _line(s: SFTScore) -> str:
    return (
        f"exact {s.accuracy:6.1%}   stops with <|endoftext|> {s.stop_rate:6.1%}   "
        f"starts with the answer {s.prefix_accuracy:6.1%}   (n={len(s.answers)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="the base model (default: the built-in one)")
    parser.add_argument("--out", default="runs/sft-builtin", help="(%(default)s)")
    parser.add_argument("--train", type=int, default=4000, help="training examples")
    parser.add_argument("--held-out", type=int, default=200, help="held-out examples")
    parser.add_argument("--steps", type=int, default=2000, help="fine-tuning steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    train, held_out = make_instructions(args.train, args.held_out, seed=args.seed)
    (out / "data").mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "data" / "train.jsonl", train)
    write_jsonl(out / "data" / "held_out.jsonl", held_out)
    started = time.perf_counter()

    print(f"before fine-tuning ({args.model or 'the built-in model'}), on held-out questions:")
    score_by_task(args.model, held_out, args.max_new_tokens)
    cfg = FinetuneConfig(
        data=str(out / "data" / "train.jsonl"),
        out=str(out / "model"),
        model=args.model,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.steps // 20,
        seed=args.seed,
    )
    finetune(cfg)
    print("after fine-tuning, on the same held-out questions:")
    score_by_task(cfg.out, held_out, args.max_new_tokens)
    print(
        f"{time.perf_counter() - started:.0f} s in all. Ask it yourself:\n"
        f'  numpylm generate --model {cfg.out} "Count from 3 to 7." --temperature 0'
    )


if __name__ == "__main__":
    main()
