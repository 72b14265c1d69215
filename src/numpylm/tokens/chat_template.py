"""Chat templates: how a chat model's conversations are written out as one text.

A chat model was fine-tuned on conversations written in one fixed format, such as ChatML::

    <|im_start|>user
    Who was the first president?<|im_end|>
    <|im_start|>assistant

Its files carry that format as a Jinja template (``tokenizer.chat_template`` in GGUF,
``chat_template`` in ``tokenizer_config.json``). The template comes from a downloaded file, so
it is untrusted code: it is rendered in Jinja's ``ImmutableSandboxedEnvironment``, which refuses
to reach Python's internals (``__class__``, ``__globals__``) or to change the messages, with the
options and helpers ``transformers`` gives templates (so the text is the same as theirs):
``trim_blocks``, ``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` that does not
escape HTML, ``raise_exception``, ``strftime_now``, ``dict`` and ``namespace``.

Special tokens the template writes are control tokens; the same text typed inside a message
must stay text, or a user could end the assistant's turn. ``ChatTemplate.pieces`` therefore
marks each special token's text in the messages before rendering, and cuts the rendered text
at the marks, as ``transformers``' ``sanitize_control_tokens=True`` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Two code points of a Unicode private-use plane mark where a message held a special token's
# text. They are removed from the messages first, so a message cannot forge a mark.
_OPEN, _CLOSE = "\U000f0000", "\U000f0001"


class ChatTemplate:
    """A compiled chat template, ready to render conversations.

    Args:
        source: the Jinja template text.
        special_tokens: the variables the template sees besides the conversation, as
            ``transformers`` passes them: ``{"bos_token": "<|im_start|>", "eos_token": ...}``.
        control_tokens: the special tokens whose text inside a message stays text.
        origin: where the template came from, for error messages (a file name).

    Raises:
        ValueError: the template is not valid Jinja (naming ``origin`` and the line).
    """

    def __init__(
        self,
        source: str,
        special_tokens: Mapping[str, str] | None = None,
        control_tokens: Iterable[str] = (),
        origin: str = "the chat template",
    ) -> None:
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self.origin = origin
        tokens = sorted(set(control_tokens), key=lambda t: (-len(t), t))  # longest first
        alternatives = "|".join(map(re.escape, tokens)) or "(?!)"  # (?!) never matches
        self._control = re.compile(alternatives)
        # A marked token, or a mark left alone (a template that cut a message in two).
        self._marks = re.compile(f"{_OPEN}({alternatives}){_CLOSE}|[{_OPEN}{_CLOSE}]")
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"{origin}: the chat template is not valid Jinja: {e}") from None

    def __repr__(self) -> str:
        return f"ChatTemplate({self.origin!r}, {len(self.source)} characters)"

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> str:
        """The conversation written out by the template (what ``transformers``'
        ``apply_chat_template(messages, tokenize=False)`` returns).

        ``messages``: a list of dicts such as ``{"role": "user", "content": "Hi"}``, whose
        values are JSON data (str, int, float, bool, None, lists and dicts of them).

        Raises:
            TypeError: a message is not a dict of JSON data.
            ValueError: the template refused the conversation (its ``raise_exception``), or the
                sandbox stopped it reaching something unsafe.
        """
        return self._render(_plain_messages(messages), add_generation_prompt)

    def pieces(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool
    ) -> list[tuple[str, bool]]:
        """``render``'s text cut into pieces ``(text, from_template)``. A special token's
        text that came from a message is a piece of its own with ``from_template`` False; the
        text around it is cut there too, so the two sides cannot join into a special token."""
        marked = _mark(_plain_messages(messages), self._control)
        text = self._render(marked, add_generation_prompt)
        out: list[tuple[str, bool]] = []
        start = 0
        for match in self._marks.finditer(text):
            out.append((text[start : match.start()], True))
            if match.group(1) is not None:
                out.append((match.group(1), False))
            start = match.end()
        out.append((text[start:], True))
        return [(piece, from_template) for piece, from_template in out if piece]

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        variables = {**self.special_tokens, "tools": None, "documents": None}
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, **variables
            )
        except jinja2.exceptions.SecurityError as e:
            raise ValueError(f"{self.origin}: the sandbox refused the chat template: {e}") from e
        except jinja2.TemplateError as e:
            raise ValueError(f"{self.origin}: the chat template failed: {e}") from e


def _environment() -> ImmutableSandboxedEnvironment:
    """A sandbox with the options and helpers ``transformers`` gives chat templates."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _dict
    env.globals["namespace"] = _Namespace
    return env


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """JSON as templates expect it: Jinja's own ``tojson`` escapes ``<``, ``>`` and ``&`` for
    HTML, which would change the text the model was trained on."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    """How a template refuses a conversation it cannot write (a role it does not know)."""
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format: str) -> str:
    """Today's date, for templates that write it into the system prompt."""
    return datetime.now().strftime(format)


def _dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    """``dict(...)`` for templates: a function, so a template cannot reach the type itself."""
    return dict(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` (a template's mutable variables), refusing names that start with
    an underscore, the way towards Python's internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a chat template may not set the attribute {name!r} (it starts with '_')"
            )


def _plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A fresh copy of the messages made of JSON data only: the template can change nothing
    of the caller's, and reaches no object with methods the sandbox does not know."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(
            f"messages is a list of dicts such as {{'role': 'user', 'content': 'Hi'}}, got "
            f"{type(messages).__name__}"
        )
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(
                f"message {i} is a {type(message).__name__}; each message is a dict such as "
                "{'role': 'user', 'content': 'Hi'}"
            )
        # transformers drops keys whose value is None (APIs send content=None).
        out.append({k: _plain(v, f"message {i}") for k, v in message.items() if v is not None})
    return out


def _plain(value: Any, where: str) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {_plain(k, where): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    raise TypeError(
        f"{where} holds a {type(value).__name__}; messages hold JSON data only (str, int, float, "
        "bool, None, lists and dicts)"
    )


def _mark(value: Any, control: re.Pattern[str]) -> Any:
    """Every special token's text in the messages' strings wrapped in the marks."""
    if isinstance(value, str):
        value = value.replace(_OPEN, "").replace(_CLOSE, "")
        return control.sub(lambda m: _OPEN + m.group() + _CLOSE, value)
    if isinstance(value, dict):
        return {k: _mark(v, control) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark(v, control) for v in value]
    return value
