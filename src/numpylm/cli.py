"""The ``numpylm`` command line.

numpylm generate "Who was the first president?" --model gpt2 --max-new-tokens 20
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .checkpoint import CheckpointError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numpylm", description="A GPT-2 language model in plain NumPy."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "generate",
        help="continue a prompt with generated text",
        description="Continue PROMPT one token at a time and print the new text.",
    )
    gen.add_argument("prompt", metavar="PROMPT", help="the text to continue; '-' reads stdin")
    gen.add_argument(
        "--model",
        "-m",
        required=True,
        metavar="NAME_OR_DIR",
        help="a model directory or a Hugging Face Hub id such as gpt2",
    )
    gen.add_argument(
        "--max-new-tokens",
        "-n",
        type=_positive_int,
        default=50,
        metavar="N",
        help="how many tokens to generate at most (default: %(default)s)",
    )
    gen.set_defaults(run=_run_generate)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _run_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .loading import load

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    model, tokenizer = load(args.model)
    prompt_ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
    ids = generate(model, prompt_ids, args.max_new_tokens, eos_id=tokenizer.eot_id)
    new = [int(i) for i in ids[len(prompt_ids) :] if i != tokenizer.eot_id]
    print(prompt + tokenizer.decode(new))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad usage, 1 for other errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (CheckpointError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"numpylm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
