"""GPT-2 in NumPy: the configuration, the parameters, and the forward pass with its KV cache.

OpenAI's GPT-2, exactly, so its weights load and give ``transformers``' logits. ``GPT.forward``
reads top to bottom as the transformer:

    ids (B, T) -> token embedding + position embedding          (B, T, C)
               -> n_layer x block:  x = x + attn(ln_1(x))
                                    x = x + mlp(ln_2(x))        (B, T, C)
               -> ln_f -> x @ wte.T (the LM head shares wte)    (B, T, V) logits

``model.params`` is a dict of plain arrays named as Hugging Face's GPT-2. Beside this file: the
functions the forward pass calls (``models.backends``), padded batches (``models.padding``),
files (``io.formats``), training's forward and backward (``backward.py``, in this folder).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import checks, memory
from ...io import formats
from ...layers import cross_entropy, embedding, merge_heads, split_heads
from ..backends import Backend, decoding_layout, get_backend
from ..cache import KVCache, new_cache
from ..padding import positions_and_mask
from . import backward, weights
from .weights import init_params

DType = np.dtype[Any] | type
PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT-2 model. The defaults are GPT-2 small (124M parameters).

    Attributes:
        vocab_size: number of tokens ``V`` (50257 for GPT-2's tokenizer).
        n_ctx: the longest sequence the model can read (its number of learned positions).
        n_layer: number of transformer blocks.
        n_head: attention heads per block; must divide ``n_embd``.
        n_embd: channels ``C`` of the residual stream.
    """

    vocab_size: int = 50257
    n_ctx: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768

    def __post_init__(self) -> None:
        checks.model_shape("GPTConfig", dataclasses.asdict(self))

    @property
    def head_size(self) -> int:
        """Channels per attention head, ``D = n_embd // n_head``."""
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str) -> GPTConfig:
        """A published GPT-2 size: ``gpt2``, ``gpt2-medium``, ``gpt2-large`` or ``gpt2-xl``."""
        return cls(**weights.preset(name))

    def to_hf(self) -> dict[str, Any]:
        """This configuration as a Hugging Face ``config.json`` (``weights.config_to_hf``)."""
        return weights.config_to_hf(dataclasses.asdict(self))

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> GPTConfig:
        """A Hugging Face GPT-2 ``config.json`` (a dict), checked (``weights.config_from_hf``)."""
        return weights.config_from_hf(hf, cls, source)


def param_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter, in Hugging Face's order."""
    V, C, N = config.vocab_size, config.n_embd, config.n_ctx
    # fmt: off
    block = {  # per block; c_attn holds the query, key and value maps side by side
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,),
    }
    # fmt: on
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (N, C)}
    for i in range(config.n_layer):
        shapes |= {f"h.{i}.{name}": shape for name, shape in block.items()}
    return shapes | {"ln_f.weight": (C,), "ln_f.bias": (C,)}


_LOOKED_UP = ("wpe.weight",)
"""The matrix the forward only indexes; ``backends.decoding_layout`` lays out the others (wte
is also the LM head) for a decoding step."""


class GPT:
    """A GPT-2 language model whose parameters are plain NumPy arrays.

    ``GPT(config, seed=0)`` is randomly initialised (GPT-2's scheme,
    ``weights.init_params``); ``GPT.from_pretrained`` loads trained weights. Calling
    the model maps token ids to next-token logits. ``backend`` chooses how the forward pass
    computes (``backends``; by default the plain layers, threads for a long pass).
    """

    def __init__(
        self,
        config: GPTConfig,
        seed: int = 0,
        dtype: DType = np.float32,
        *,
        params: dict[str, np.ndarray] | None = None,
        backend: str | Backend | None = None,
    ) -> None:
        self.config, self.dtype, self.backend = config, np.dtype(dtype), get_backend(backend)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if params is None:  # loaded weights were checked before they were read
            memory.check_model(config, self.dtype.itemsize, "building")
        shapes = param_shapes(config)
        params = init_params(shapes, config.n_layer, seed, self.dtype) if params is None else params
        formats.check_shapes(shapes, params, f"the config ({config})")
        params = {k: np.asarray(v, dtype=self.dtype) for k, v in params.items()}
        self.params: dict[str, np.ndarray] = decoding_layout(params, _LOOKED_UP)

    def __repr__(self) -> str:
        c, n = self.config, self.num_params()
        shape = f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, n_ctx={c.n_ctx}"
        return f"GPT({shape}, vocab_size={c.vocab_size}, params={n:,}, dtype={self.dtype})"

    def num_params(self) -> int:
        """Number of parameters (the tied LM head is counted once)."""
        return sum(p.size for p in self.params.values())

    @classmethod
    def from_pretrained(cls, name_or_path: PathArg, dtype: DType = np.float32) -> GPT:
        """Load GPT-2 from a directory (``config.json`` + ``model.safetensors``) or the Hugging
        Face Hub (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``, ...: downloaded once)."""
        hf, tensors, source = formats.read_model(name_or_path)
        config = GPTConfig.from_hf(hf, source=f"{source}/config.json")
        memory.check_model(config, np.dtype(dtype).itemsize, "loading", source)
        params = weights.params_from_hf(tensors, param_shapes(config), source)
        del tensors  # laid out in the loaded dict, each replaced array is freed at once
        return cls(config, dtype=dtype, params=decoding_layout(params, _LOOKED_UP))

    def save_pretrained(self, directory: PathArg, dtype: DType | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` atomically, as ``transformers`` reads
        them; ``dtype`` (e.g. ``np.float16``, half the size) converts the weights as written."""
        stored = self.dtype if dtype is None else dtype
        return formats.write_model(
            directory, self.config.to_hf(), self.params, stored, weights.params_to_hf
        )

    def new_cache(self, batch_size: int = 1, capacity: int | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences; it grows as they do, up to ``n_ctx``
        tokens (``capacity``: the positions to hold from the start)."""
        c = self.config
        shape = (c.n_layer, batch_size, c.n_head, c.n_ctx, c.head_size)
        return new_cache(shape, self.dtype, capacity)

    def forward(
        self,
        ids: checks.TokenIds,
        cache: KVCache | None = None,
        *,
        attention_mask: np.ndarray | None = None,
        last_only: bool = False,
        backend: str | Backend | None = None,
    ) -> np.ndarray:
        """Next-token logits for every position of ``ids``; ``model(ids, ...)`` calls this.

        Args:
            ids: (B, T) integer token ids; a 1-D (T,) array is one sequence (B = 1).
            cache: a ``KVCache`` from ``new_cache``. The ids are then the *new* tokens: they sit
                at positions continuing from what the cache holds, attend to the cached keys and
                values, and have their own appended. Prefill (T > 1) and decode (T = 1) are the
                same call. Without a cache the ids are a whole sequence from position 0.
            attention_mask: (B, T) with 1 for real tokens and 0 for padding (for prompts of
                different lengths, padded on the left). Padding is never attended to and does
                not advance the position ids.
            last_only: compute the logits of the last position only (all that generation needs
                after reading a prompt; it skips most of the LM head's work).
            backend: compute with this backend for this call (default: the model's).

        Returns:
            (B, T, V) logits in the model's dtype, or (T, V) for 1-D ``ids``; T is 1 with
            ``last_only``.
        """
        p, c = self.params, self.config
        ids2d = checks.token_ids(ids, c.vocab_size)
        B, T = ids2d.shape
        be = get_backend(backend or self.backend, rows=B * T)  # by default: plain, or threads
        kv_shape = (c.n_layer, B, c.n_head, c.n_ctx, c.head_size)  # of a cache for this batch
        start = checks.cache_room(cache, T, kv_shape, self.dtype)
        mask = None if attention_mask is None else checks.attention_mask(attention_mask, B, T)
        # pos: (T,) or (B, T); allowed: which keys each new token may see, (T, L) or None
        pos, allowed, pad = positions_and_mask(T, start, mask, cache.padding if cache else None)

        with be.session(B * T):  # whatever the backend needs around a pass (threads: BLAS)
            x = be.dropout(embedding(p["wte.weight"], p["wpe.weight"], ids2d, pos))  # (B,T,C)
            for i in range(c.n_layer):
                x = self.block(i, x, cache, allowed, be)  # (B, T, C)
            if last_only:
                x = x[:, -1:]  # (B, 1, C)
            x = be.layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
            logits = be.linear(x, p["wte.weight"].T)  # (B, T, V): the LM head is wte, tied
        if cache is not None:
            cache.length, cache.padding = start + T, pad
        return logits[0] if np.ndim(ids) == 1 else logits

    __call__ = forward

    def block(
        self, i: int, x: np.ndarray, cache: KVCache | None, allowed: np.ndarray | None, be: Backend
    ) -> np.ndarray:
        """Transformer block ``i``, (B, T, C) -> (B, T, C): attention, then the MLP, each added
        to the residual stream. With a cache, attention reads the cached keys and values too."""
        p, h, T, H = self.params, f"h.{i}.", x.shape[1], self.config.n_head
        start = 0 if cache is None else cache.length  # forward updates it after the last block

        # Attention: every new token asks (query) and offers (key, value).
        a = be.layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
        qkv = be.linear(a, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"])  # (B, T, 3C)
        qkv = split_heads(qkv, 3 * H)  # (B, T, 3C) -> (B, 3H, T, D): H heads each of q, k, v
        q, k, v = qkv[:, :H], qkv[:, H : 2 * H], qkv[:, 2 * H :]  # 3 x (B, H, T, D)
        if cache is not None:  # store the new keys and values after the cached ones
            cache.k[i, :, :, start : start + T], cache.v[i, :, :, start : start + T] = k, v
            k, v = cache.k[i, :, :, : start + T], cache.v[i, :, :, : start + T]  # (B, H, L, D)
        y = merge_heads(be.attention(q, k, v, allowed))  # (B, H, T, D) -> (B, T, C)
        x = x + be.dropout(be.linear(y, p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"]))

        # MLP: widen to 4C, bend with GELU, project back.
        m = be.layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
        u = be.gelu(be.linear(m, p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"]))  # (B,T,4C)
        return x + be.dropout(be.linear(u, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"]))

    def attention_maps(self, ids: checks.TokenIds) -> list[np.ndarray]:
        """Where each token looks: every layer's (B, H, T, T) attention probabilities for (B, T)
        ``ids`` ((H, T, T) for 1-D ids): ``[b, h, t, s]`` is how much head ``h`` of token ``t``
        attends to token ``s`` (rows sum to 1, 0 above the diagonal), as training records them."""
        maps = self._recorded(ids).saved("attention", 3)
        return [a[0] for a in maps] if np.ndim(ids) == 1 else maps

    def hidden_states(self, ids: checks.TokenIds) -> list[np.ndarray]:
        """The residual stream: the (B, T, C) embeddings, then each block's output, n_layer + 1
        arrays ((T, C) each for 1-D ids), before ``ln_f``: ``[i][b, t]`` is what token ``t``
        means after ``i`` blocks of reading its context. They are the inputs of ``ln_1`` in
        each block and of ``ln_f``, which the training forward records."""
        x = self._recorded(ids).saved("layer_norm")[::2]  # skip each block's ln_2
        return [a[0] for a in x] if np.ndim(ids) == 1 else x

    def _recorded(self, ids: checks.TokenIds) -> backward.Tape:
        ids2d = checks.token_window(ids, self.config.vocab_size, self.config.n_ctx)
        return backward.record(self, ids2d)[1]

    def loss(self, ids: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> float:
        """The mean next-token cross-entropy, forward only (for evaluation); the arguments are
        those of ``loss_and_grads``."""
        c = self.config
        ids2d, targets2d, mask2d = checks.training_batch(ids, targets, mask, c.vocab_size, c.n_ctx)
        return cross_entropy(self(ids2d), targets2d, mask2d)[0]

    def loss_and_grads(
        self,
        ids: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        dropout: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The mean cross-entropy of predicting ``targets`` from ``ids``, and its gradient:
        ``(loss, grads)``, a float and a dict with exactly the names and shapes of ``params``.

        Args:
            ids: (B, T) integer token ids, T <= n_ctx.
            targets: (B, T) the token that should follow each position (usually ``ids``
                shifted by one); -1 does not count.
            mask: (B, T) bool, True where a position counts towards the loss; None counts every
                position. It only selects which predictions are scored: every token is read.
            dropout: the rate in ``[0, 1)`` at GPT-2's three sites (``backward.recording``);
                0 is the exact model. Only this training call ever drops.
            rng: the generator of the dropout masks; the same state gives the same masks.
        """
        c = self.config
        ids2d, targets2d, mask2d = checks.training_batch(ids, targets, mask, c.vocab_size, c.n_ctx)
        rate = checks.dropout_rate(dropout, "dropout")
        rng = (rng or np.random.default_rng()) if rate else None
        logits, tape = backward.record(self, ids2d, rate, rng)  # (B, T, V), what backward reads
        loss, dlogits = cross_entropy(logits, targets2d, mask2d)
        del logits  # the largest activation; its gradient has taken its place
        grads = backward.backward(self.params, c.n_layer, c.n_head, ids2d, tape, dlogits, rate)
        return loss, grads
