"""The model families numpylm computes, as one type: what loading returns and generation takes.

``GPT`` (``gpt2/``) and ``Llama`` (``llama/``: Llama, SmolLM2, Qwen2) are called the same way
(``model(ids, cache=..., attention_mask=..., last_only=...)``), have a ``config`` with
``vocab_size`` and ``n_ctx``, ``new_cache``, ``loss``, ``hidden_states`` and
``attention_maps``; only GPT trains.
"""

from __future__ import annotations

from .gpt2.model import GPT
from .llama.model import Llama

LanguageModel = GPT | Llama
"""A model of either family."""
