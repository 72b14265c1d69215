"""GPT-2 in NumPy: the configuration, the parameters, the forward pass and the KV cache.

The model is OpenAI's GPT-2, exactly, so that the real GPT-2 weights load and give the same
logits as Hugging Face ``transformers``:

    ids (B, T) -> token embedding + position embedding          (B, T, C)
               -> n_layer x block:  x = x + attn(ln_1(x))
                                    x = x + mlp(ln_2(x))        (B, T, C)
               -> ln_f -> x @ wte.T (the LM head shares wte)    (B, T, V) logits

Parameters are plain arrays in ``model.params``, keyed by Hugging Face's GPT-2 state-dict names
(without the ``transformer.`` prefix), so loading and saving need no mapping table.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import checkpoint, parallel
from .layers import (
    attention,
    attention_backward,
    causal_mask,
    check_dropout,
    cross_entropy,
    dropout,
    dropout_backward,
    dropout_mask,
    embedding,
    embedding_backward,
    gelu,
    gelu_backward,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    merge_heads,
    split_heads,
)

T_ = TypeVar("T_")

# Buffers that old GPT-2 checkpoints store beside the weights; they are constants, not weights.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


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
        for name in ("vocab_size", "n_ctx", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )

    @property
    def head_size(self) -> int:
        """Channels per attention head, ``D = n_embd // n_head``."""
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str) -> GPTConfig:
        """The configuration of a published GPT-2 size: ``gpt2``, ``gpt2-medium``,
        ``gpt2-large`` or ``gpt2-xl``."""
        try:
            n_layer, n_head, n_embd = GPT2_SIZES[name.removeprefix("openai-community/")]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(GPT2_SIZES)}") from None
        return cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd)

    def to_hf(self) -> dict[str, Any]:
        """This configuration as a Hugging Face ``config.json`` for ``GPT2LMHeadModel``."""
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_ctx,
            "n_ctx": self.n_ctx,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_embd": self.n_embd,
            "n_inner": None,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "tie_word_embeddings": True,
            "bos_token_id": self.vocab_size - 1,
            "eos_token_id": self.vocab_size - 1,
            "torch_dtype": "float32",
        }

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> GPTConfig:
        """Read a Hugging Face GPT-2 ``config.json`` (as a dict), refusing variants that would
        compute something other than GPT-2."""
        if hf.get("model_type", "gpt2") != "gpt2":
            raise checkpoint.CheckpointError(
                f"{source}: model_type is {hf.get('model_type')!r}; numpylm implements GPT-2 only"
            )
        n_embd = int(hf.get("n_embd", 768))
        unsupported = {
            "activation_function": (hf.get("activation_function", "gelu_new"), "gelu_new"),
            "n_inner": (hf.get("n_inner") or 4 * n_embd, 4 * n_embd),
            "scale_attn_weights": (hf.get("scale_attn_weights", True), True),
            "scale_attn_by_inverse_layer_idx": (
                hf.get("scale_attn_by_inverse_layer_idx", False),
                False,
            ),
            "tie_word_embeddings": (hf.get("tie_word_embeddings", True), True),
        }
        for key, (value, expected) in unsupported.items():
            if value != expected:
                raise checkpoint.CheckpointError(
                    f"{source}: {key}={value!r} is not supported (numpylm computes GPT-2 with "
                    f"{key}={expected!r})"
                )
        eps = float(hf.get("layer_norm_epsilon", 1e-5))
        if not math.isclose(eps, 1e-5):
            raise checkpoint.CheckpointError(
                f"{source}: layer_norm_epsilon={eps} is not supported (GPT-2 uses 1e-5)"
            )
        try:
            return cls(
                vocab_size=int(hf.get("vocab_size", 50257)),
                n_ctx=int(hf.get("n_positions", hf.get("n_ctx", 1024))),
                n_layer=int(hf.get("n_layer", 12)),
                n_head=int(hf.get("n_head", 12)),
                n_embd=n_embd,
            )
        except ValueError as e:
            raise checkpoint.CheckpointError(f"{source}: {e}") from e


GPT2_SIZES = {  # name: (n_layer, n_head, n_embd)
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}


def param_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter, in Hugging Face's order."""
    V, C, N = config.vocab_size, config.n_embd, config.n_ctx
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (N, C)}
    for i in range(config.n_layer):
        h = f"h.{i}."
        shapes |= {
            h + "ln_1.weight": (C,),
            h + "ln_1.bias": (C,),
            h + "attn.c_attn.weight": (C, 3 * C),
            h + "attn.c_attn.bias": (3 * C,),
            h + "attn.c_proj.weight": (C, C),
            h + "attn.c_proj.bias": (C,),
            h + "ln_2.weight": (C,),
            h + "ln_2.bias": (C,),
            h + "mlp.c_fc.weight": (C, 4 * C),
            h + "mlp.c_fc.bias": (4 * C,),
            h + "mlp.c_proj.weight": (4 * C, C),
            h + "mlp.c_proj.bias": (C,),
        }
    shapes |= {"ln_f.weight": (C,), "ln_f.bias": (C,)}
    return shapes


def init_params(
    config: GPTConfig, seed: int = 0, dtype: np.dtype[Any] | type = np.float32
) -> dict[str, np.ndarray]:
    """GPT-2's initialisation: weights N(0, 0.02), the two projections that write into the
    residual stream scaled by 1/sqrt(2 * n_layer) (so the stream's variance does not grow with
    depth), zero biases, LayerNorm gains 1."""
    rng = np.random.default_rng(seed)
    resid_std = 0.02 / math.sqrt(2 * config.n_layer)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            p = np.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            p = np.zeros(shape, dtype=dtype)
        else:
            std = resid_std if name.endswith("c_proj.weight") else 0.02
            p = rng.standard_normal(shape, dtype=dtype) * std
        params[name] = p
    return params


@dataclass
class KVCache:
    """The keys and values of every token the model has already read, per layer.

    Without a cache, each new token would mean running the whole sequence through the model
    again; with it, a step computes the new token's query, key and value only and attends over
    the stored ones. The arrays are allocated once, for the full context.

    Attributes:
        k: (n_layer, B, H, n_ctx, D) keys; positions ``[0, length)`` are filled.
        v: (n_layer, B, H, n_ctx, D) values, aligned with ``k``.
        length: number of positions filled so far; the next token goes at this index.
        key_mask: (B, n_ctx) bool, False for padding positions (batches of prompts of different
            lengths are padded on the left); None while there is no padding.
        n_real: (B,) number of real (non-padding) tokens per row, which is where each row's
            position ids continue from.
    """

    k: np.ndarray
    v: np.ndarray
    length: int = 0
    key_mask: np.ndarray | None = None
    n_real: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def batch_size(self) -> int:
        return int(self.k.shape[1])

    @property
    def capacity(self) -> int:
        return int(self.k.shape[3])

    def reset(self) -> None:
        """Forget every stored token (the arrays are kept for reuse)."""
        self.length = 0
        self.key_mask = None
        self.n_real = np.zeros(self.batch_size, dtype=np.int64)


class GPT:
    """A GPT-2 language model whose parameters are plain NumPy arrays.

    ``GPT(config, seed=0)`` is randomly initialised (GPT-2's scheme); ``GPT.from_pretrained``
    loads trained weights. Calling the model maps token ids to next-token logits.

    ``params["wte.weight"]`` is a (V, C) array stored column-major (it is the transpose of a
    C-contiguous (C, V) array). It means the same numbers; the layout only makes the LM head
    ``x @ wte.T``, the largest matrix product of a decoding step, read memory in order.
    """

    def __init__(
        self,
        config: GPTConfig,
        seed: int = 0,
        dtype: np.dtype[Any] | type = np.float32,
        *,
        params: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if params is None:
            params = init_params(config, seed, self.dtype)
        check_params(config, params)
        params = {k: np.asarray(v, dtype=self.dtype) for k, v in params.items()}
        params["wte.weight"] = np.ascontiguousarray(params["wte.weight"].T).T
        self.params: dict[str, np.ndarray] = params

    def __repr__(self) -> str:
        c = self.config
        return (
            f"GPT(n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, n_ctx={c.n_ctx}, "
            f"vocab_size={c.vocab_size}, params={self.num_params():,}, dtype={self.dtype})"
        )

    def num_params(self) -> int:
        """Number of parameters (the tied LM head is counted once)."""
        return sum(p.size for p in self.params.values())

    # ----------------------------------------------------------------------------------------
    # Loading and saving

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], dtype: np.dtype[Any] | type = np.float32
    ) -> GPT:
        """Load GPT-2 weights from a local directory or the Hugging Face Hub.

        Args:
            name_or_path: a directory in Hugging Face layout (``config.json`` +
                ``model.safetensors``), or a Hub id such as ``gpt2``, ``gpt2-medium``,
                ``gpt2-large``, ``gpt2-xl`` or ``openai-community/gpt2``, downloaded once into
                the Hugging Face cache.
            dtype: float32 (default) or float64.

        Both key spellings (``h.0...`` and ``transformer.h.0...``) are accepted; the attention
        mask buffers are skipped and ``lm_head.weight`` is tied to ``wte.weight``.
        """
        model_dir = checkpoint.resolve(name_or_path)
        files = checkpoint.weight_files(model_dir)  # first: it explains a pickle-only directory
        config_path = model_dir / checkpoint.CONFIG_FILE
        if not config_path.is_file():
            raise checkpoint.CheckpointError(
                f"{model_dir} has no {checkpoint.CONFIG_FILE}: it is not a model directory"
            )
        config = GPTConfig.from_hf(checkpoint.read_json(config_path), source=str(config_path))
        tensors: dict[str, np.ndarray] = {}
        for path in files:
            tensors |= checkpoint.read_safetensors(path)
        return cls(config, dtype=dtype, params=_from_hf_names(tensors, config, model_dir))

    def save_pretrained(
        self, directory: str | os.PathLike[str], dtype: np.dtype[Any] | type | None = None
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (Hugging Face's layout, readable by
        ``transformers.GPT2LMHeadModel.from_pretrained``). Each file is replaced atomically.

        ``dtype`` (for example ``np.float16``, half the size on disk) converts the weights as
        they are written; by default they keep the model's dtype. Loading converts back.
        """
        out = Path(directory)
        stored = self.dtype if dtype is None else np.dtype(dtype)
        if stored not in (np.float16, np.float32, np.float64):
            raise ValueError(f"dtype must be float16, float32 or float64, got {stored}")
        tensors = {f"transformer.{k}": v.astype(stored, copy=False) for k, v in self.params.items()}
        checkpoint.write_safetensors(out / checkpoint.WEIGHTS_FILE, tensors)
        hf = self.config.to_hf() | {"torch_dtype": str(stored)}
        checkpoint.write_json(out / checkpoint.CONFIG_FILE, hf)
        return out

    # ----------------------------------------------------------------------------------------
    # The forward pass

    def new_cache(self, batch_size: int = 1) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences, with room for ``n_ctx`` tokens."""
        c = self.config
        shape = (c.n_layer, batch_size, c.n_head, c.n_ctx, c.head_size)
        # np.empty: memory is only touched (and counted) as the cache fills up.
        return KVCache(
            k=np.empty(shape, dtype=self.dtype),
            v=np.empty(shape, dtype=self.dtype),
            n_real=np.zeros(batch_size, dtype=np.int64),
        )

    def __call__(
        self,
        ids: np.ndarray | list[int] | list[list[int]],
        cache: KVCache | None = None,
        *,
        attention_mask: np.ndarray | None = None,
        last_only: bool = False,
    ) -> np.ndarray:
        """Next-token logits for every position of ``ids``.

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

        Returns:
            (B, T, V) logits in the model's dtype, or (T, V) for 1-D ``ids``; T is 1 with
            ``last_only``.
        """
        ids2d = self._check_ids(ids)
        B, T = ids2d.shape
        start = 0 if cache is None else cache.length
        if start + T > self.config.n_ctx:
            where = f"the cache holds {start} and {T} more were given; " if cache else ""
            raise ValueError(
                f"sequence too long: {where}{start + T} tokens exceed the model's context of "
                f"n_ctx={self.config.n_ctx}. Keep only the last {self.config.n_ctx} tokens "
                "(generate() does this for you)"
            )
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"the cache was made for batch size {cache.batch_size}, ids have {B}")
        mask = None if attention_mask is None else self._check_mask(attention_mask, B, T)
        with parallel.single_threaded_blas(ids2d.size):  # numpylm's threads split the work
            logits = self._forward(ids2d, cache, mask, last_only)
        return logits[0] if np.ndim(ids) == 1 else logits

    def attention_maps(self, ids: np.ndarray | list[int] | list[list[int]]) -> list[np.ndarray]:
        """Where each token looks: every layer's attention probabilities for ``ids``.

        Args:
            ids: (B, T) integer token ids, or a 1-D (T,) sequence; T <= n_ctx.

        Returns:
            One array per layer, (B, H, T, T) (or (H, T, T) for 1-D ``ids``), in the model's
            dtype: entry ``[b, h, t, s]`` is how much head ``h`` of token ``t`` attends to token
            ``s``. Each row sums to 1 and is 0 above the diagonal (no token sees its future).

        It is the ordinary forward pass with the probabilities kept, so the model's logits
        for the same ids are unchanged by asking.
        """
        ids2d = self._check_ids(ids)
        if ids2d.shape[1] > self.config.n_ctx:
            raise ValueError(
                f"sequence too long: {ids2d.shape[1]} tokens exceed the model's context of "
                f"n_ctx={self.config.n_ctx}; pass at most the last {self.config.n_ctx} tokens"
            )
        acts: dict[str, np.ndarray] = {}
        self._forward(ids2d, acts=acts)
        maps = [acts[f"h.{i}.att"] for i in range(self.config.n_layer)]  # each (B, H, T, T)
        return [m[0] for m in maps] if np.ndim(ids) == 1 else maps

    def _forward(
        self,
        ids: np.ndarray,
        cache: KVCache | None = None,
        mask: np.ndarray | None = None,
        last_only: bool = False,
        acts: dict[str, np.ndarray] | None = None,
        drop: _Dropout | None = None,
    ) -> np.ndarray:
        """The forward pass over validated (B, T) ids; see ``__call__``.

        ``acts``, when given, receives the intermediate arrays that the backward pass needs
        (and the attention probabilities, for pictures), named ``h.{i}.<what>``; without it
        nothing extra is kept. ``drop`` turns dropout on (training only; ``loss_and_grads``).
        """
        p, c = self.params, self.config
        B, T = ids.shape
        start = 0 if cache is None else cache.length
        L = start + T  # keys visible to the last new token

        # Position ids and the attention mask. Without padding, positions simply count on from
        # the cache; with left padding each row counts its own real tokens, so a short prompt
        # starts at position 0 like it would alone.
        key_mask = None  # (B, L) True for real tokens
        if mask is None and (cache is None or cache.key_mask is None):
            pos: np.ndarray = np.arange(start, L)  # (T,)
            n_new = np.full(B, T)
        else:
            new = np.ones((B, T), dtype=bool) if mask is None else mask
            before = cache.n_real if cache is not None else np.zeros(B, dtype=np.int64)
            pos = np.maximum(before[:, None] + np.cumsum(new, axis=1) - 1, 0)  # (B, T)
            if cache is not None and cache.key_mask is not None:
                old = cache.key_mask[:, :start]
            else:
                old = np.ones((B, start), dtype=bool)
            key_mask = np.concatenate([old, new], axis=1)
            n_new = new.sum(axis=1)

        # Which keys each new token may attend to: none in its future, and no padding.
        allowed = None
        if T > 1:
            allowed = causal_mask(T, L)  # (T, L)
        if key_mask is not None:
            km = key_mask[:, None, None, :]  # (B, 1, 1, L)
            allowed = km if allowed is None else (allowed & km)

        keep = _keeper(acts, "")
        keep("pos", pos)
        x = embedding(p["wte.weight"], p["wpe.weight"], ids, pos)  # (B, T, C)
        x = _dropped(drop, keep, "embd.keep", x)
        for i in range(c.n_layer):
            x = self._block(i, x, cache, start, allowed, acts, drop)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        keep("ln_f.in", x)
        x = keep("ln_f.out", layer_norm(x, p["ln_f.weight"], p["ln_f.bias"]))
        head = p["wte.weight"].T  # (C, V): the LM head is the token embedding, tied
        logits = parallel.linear(x, head) if acts is None else x @ head  # (B, T, V)

        if cache is not None:
            cache.length = L
            cache.n_real = cache.n_real + n_new
            if key_mask is not None:
                if cache.key_mask is None:
                    cache.key_mask = np.ones((B, c.n_ctx), dtype=bool)
                cache.key_mask[:, :L] = key_mask
        return logits

    def _block(
        self,
        i: int,
        x: np.ndarray,
        cache: KVCache | None,
        start: int,
        allowed: np.ndarray | None,
        acts: dict[str, np.ndarray] | None = None,
        drop: _Dropout | None = None,
    ) -> np.ndarray:
        """Transformer block ``i``: attention, then the MLP, each added to the residual stream.

        x: (B, T, C) -> (B, T, C). ``keep`` records an intermediate in ``acts`` (if given) for
        the backward pass, and returns it unchanged. With ``drop``, dropout at the attention
        probabilities and at both branches' outputs.
        """
        p, h = self.params, f"h.{i}."
        T = x.shape[1]
        n_head = self.config.n_head
        keep = _keeper(acts, h)
        # Inference splits its large operations over the cores (numpylm.parallel); training
        # calls the layers as they are and keeps what the backward pass reads.
        lin, act_fn = (linear, gelu) if acts is not None else (parallel.linear, parallel.gelu)

        # Attention: every new token asks (query) and offers (key, value).
        keep("ln_1.in", x)
        a = keep("ln_1.out", layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"]))
        qkv = lin(a, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"])  # (B, T, 3C)
        q, k, v = (split_heads(t, n_head) for t in np.split(qkv, 3, axis=-1))  # 3 x (B, H, T, D)
        if cache is not None:
            # Store the new keys and values, then attend over everything stored so far.
            cache.k[i, :, :, start : start + T] = k
            cache.v[i, :, :, start : start + T] = v
            k = cache.k[i, :, :, : start + T]  # (B, H, L, D)
            v = cache.v[i, :, :, : start + T]
        if acts is None:  # inference: nothing to keep, nothing dropped
            y = parallel.attention(q, k, v, allowed)  # (B, H, T, D)
        else:
            keep("q", q), keep("k", k), keep("v", v)
            att_drop = None  # with dropout, each query forgets some of the keys it would weigh
            if drop is not None:
                shape = (*q.shape[:3], k.shape[2])  # (B, H, T, L)
                att_drop = (keep("att.keep", dropout_mask(shape, drop.p, drop.rng)), drop.p)
            y, att = attention(q, k, v, allowed, drop=att_drop)  # (B, H, T, D), (B, H, T, L)
            keep("att", att)
        y = keep("attn.y", merge_heads(y))  # (B, T, C)
        y = lin(y, p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"])
        x = x + _dropped(drop, keep, "attn.keep", y)

        # MLP: widen to 4C, bend with GELU, project back.
        keep("ln_2.in", x)
        m = keep("ln_2.out", layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"]))
        u = keep("mlp.fc", lin(m, p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"]))  # (B,T,4C)
        g = keep("mlp.gelu", act_fn(u))
        out = lin(g, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"])
        return x + _dropped(drop, keep, "mlp.keep", out)

    # ----------------------------------------------------------------------------------------
    # Training: the loss, and its gradient with respect to every parameter, written out by hand

    def loss(self, ids: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> float:
        """The mean next-token cross-entropy, forward only (for evaluation); the arguments are
        those of ``loss_and_grads``."""
        ids2d, targets2d, mask2d = self._check_batch(ids, targets, mask)
        with parallel.single_threaded_blas(ids2d.size):  # numpylm's threads split the work
            logits = self._forward(ids2d)
        return cross_entropy(logits, targets2d, mask2d)[0]

    def loss_and_grads(
        self,
        ids: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        dropout: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """The mean cross-entropy of predicting ``targets`` from ``ids``, and its gradient.

        Args:
            ids: (B, T) integer token ids (a (T,) array is one sequence), T <= n_ctx.
            targets: integer array shaped like ``ids``: the token that should follow each
                position (usually ``ids`` shifted by one). A target of -1 does not count.
            mask: boolean array shaped like ``ids``, True where a position counts towards the
                loss; None counts every position. It only selects which predictions are
                scored: every token is still read and attended to.
            dropout: the dropout rate in ``[0, 1)``, at GPT-2's three sites (after the
                embedding, on the attention probabilities, on each residual branch). 0, the
                default, is the exact model with no randomness. Only this training call drops:
                ``model(ids)``, ``loss`` and generation never do, and no state is left behind.
            rng: the generator of the dropout masks; the same state gives the same masks (and
                the same loss and gradient). None draws them from a fresh, unseeded generator.

        Returns:
            ``(loss, grads)``: the mean loss over the counted positions (a Python float), and
            a dict with exactly the names and shapes of ``self.params``, in the model's dtype.

        The backward pass walks the forward in reverse, reusing the activations it recorded;
        each step is the ``*_backward`` twin in ``layers`` of a forward line.
        """
        ids2d, targets2d, mask2d = self._check_batch(ids, targets, mask)
        p_drop = check_dropout(dropout, "dropout")
        drop = _Dropout(p_drop, rng or np.random.default_rng()) if p_drop else None
        _keep_freed_memory()
        p = self.params
        acts: dict[str, np.ndarray] = {}
        logits = self._forward(ids2d, acts=acts, drop=drop)  # (B, T, V)
        loss, dlogits = cross_entropy(logits, targets2d, mask2d)
        del logits  # the largest activation; its gradient has taken its place
        grads: dict[str, np.ndarray] = {}

        # logits = x @ wte.T: the tied LM head gives wte its first share of gradient
        x = acts["ln_f.out"]  # (B, T, C)
        V, C = p["wte.weight"].shape
        # (V, C), column-major like wte itself, so the optimiser's updates run in memory order
        grads["wte.weight"] = (x.reshape(-1, C).T @ dlogits.reshape(-1, V)).T
        dx = dlogits @ p["wte.weight"]  # (B, T, C)
        dx, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(
            dx, acts["ln_f.in"], p["ln_f.weight"]
        )
        for i in reversed(range(self.config.n_layer)):
            dx = self._block_backward(i, dx, acts, grads, p_drop)
        if p_drop:  # x = dropout(x), after the embedding
            dx = dropout_backward(dx, acts["embd.keep"], p_drop)
        # x = wte[ids] + wpe[pos]: the embedding adds wte's second share
        grads["wpe.weight"] = np.zeros_like(p["wpe.weight"])
        embedding_backward(dx, ids2d, acts["pos"], grads["wte.weight"], grads["wpe.weight"])
        return loss, {name: grads[name] for name in p}

    def _block_backward(
        self,
        i: int,
        dx: np.ndarray,
        acts: dict[str, np.ndarray],
        grads: dict[str, np.ndarray],
        p_drop: float = 0.0,
    ) -> np.ndarray:
        """Backward of ``_block`` ``i``: (B, T, C) gradient of its output -> of its input.

        Fills ``grads`` with the block's parameter gradients. A residual ``x = x + f(x)``
        passes the gradient through unchanged and adds the branch's: ``dx + df``. ``p_drop``
        is the forward's dropout rate (0: it dropped nothing).
        """
        p, h = self.params, f"h.{i}."

        def act(name: str) -> np.ndarray:
            return acts[h + name]

        def backward_linear(d: np.ndarray, x: np.ndarray, name: str) -> np.ndarray:
            dx, grads[name + ".weight"], grads[name + ".bias"] = linear_backward(
                d, x, p[name + ".weight"]
            )
            return dx

        def backward_ln(d: np.ndarray, x: np.ndarray, name: str) -> np.ndarray:
            dx, grads[name + ".weight"], grads[name + ".bias"] = layer_norm_backward(
                d, x, p[name + ".weight"]
            )
            return dx

        def backward_dropout(d: np.ndarray, name: str) -> np.ndarray:
            return dropout_backward(d, act(name), p_drop) if p_drop else d

        # x = x + drop(linear(g, mlp.c_proj)); g = gelu(u); u = linear(m, mlp.c_fc); m = ln_2(x)
        dout = backward_dropout(dx, "mlp.keep")
        dg = backward_linear(dout, act("mlp.gelu"), h + "mlp.c_proj")
        du = gelu_backward(dg, act("mlp.fc"), act("mlp.gelu"))  # (B, T, 4C)
        dm = backward_linear(du, act("ln_2.out"), h + "mlp.c_fc")
        dx = dx + backward_ln(dm, act("ln_2.in"), h + "ln_2")

        # x = x + drop(linear(y, attn.c_proj)); y = attention(q, k, v); q, k, v = linear(ln_1(x))
        dy = backward_linear(backward_dropout(dx, "attn.keep"), act("attn.y"), h + "attn.c_proj")
        dy = split_heads(dy, self.config.n_head)  # (B, H, T, D)
        att_drop = (act("att.keep"), p_drop) if p_drop else None
        dq, dk, dv = attention_backward(dy, act("q"), act("k"), act("v"), act("att"), drop=att_drop)
        dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)
        da = backward_linear(dqkv, act("ln_1.out"), h + "attn.c_attn")  # dqkv: (B, T, 3C)
        return dx + backward_ln(da, act("ln_1.in"), h + "ln_1")

    def _check_batch(
        self, ids: np.ndarray, targets: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Validate a training batch: (B, T) ids, targets in [-1, V), an optional (B, T) mask."""
        ids2d = self._check_ids(ids)
        B, T = ids2d.shape
        if T > self.config.n_ctx:
            raise ValueError(
                f"sequences of {T} tokens exceed the model's context of n_ctx="
                f"{self.config.n_ctx}; train on chunks of at most {self.config.n_ctx} tokens"
            )
        t = np.asarray(targets)
        if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"targets must be an integer array, got dtype {t.dtype}")
        if t.shape != np.shape(ids):
            raise ValueError(f"targets must have the shape of ids, {np.shape(ids)}, got {t.shape}")
        t = t.reshape(B, T)
        lo, hi = int(t.min()), int(t.max())
        if lo < -1 or hi >= self.config.vocab_size:
            raise ValueError(
                f"target {lo if lo < -1 else hi} is out of range: targets are token ids 0 to "
                f"{self.config.vocab_size - 1}, or -1 for a position that does not count"
            )
        if mask is None:
            return ids2d, t, None
        m = np.asarray(mask)
        if m.shape != np.shape(ids):
            raise ValueError(f"mask must have the shape of ids, {np.shape(ids)}, got {m.shape}")
        return ids2d, t, m.astype(bool).reshape(B, T)

    # ----------------------------------------------------------------------------------------
    # Input checks: a clear message here instead of a traceback from deep inside NumPy.

    def _check_ids(self, ids: np.ndarray | list[int] | list[list[int]]) -> np.ndarray:
        try:
            arr = np.asarray(ids)
        except ValueError:  # NumPy's words for a ragged list are about its internals
            raise ValueError(
                "token ids must form a (B, T) array, but the rows have different lengths; pad "
                "them on the left and pass attention_mask (1 for tokens, 0 for padding)"
            ) from None
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(
                f"token ids must be an integer array, got dtype {arr.dtype}; tokenize text with "
                "Tokenizer.encode, or convert with np.asarray(ids, dtype=np.int64)"
            )
        if arr.ndim not in (1, 2):
            raise ValueError(f"token ids must have shape (T,) or (B, T), got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"token ids are empty (shape {arr.shape}); give at least one token")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"token id {bad} is out of range: this model's vocabulary has ids 0 to "
                f"{self.config.vocab_size - 1} (was the text encoded with another tokenizer?)"
            )
        return arr.reshape(1, -1) if arr.ndim == 1 else arr

    @staticmethod
    def _check_mask(mask: np.ndarray, B: int, T: int) -> np.ndarray:
        m = np.asarray(mask)
        if m.shape != (B, T):
            raise ValueError(
                f"attention_mask must have the shape of ids, ({B}, {T}), got {m.shape}"
            )
        return m.astype(bool)


def _keeper(acts: dict[str, np.ndarray] | None, prefix: str) -> Callable[[str, T_], T_]:
    """A function ``keep(name, value) -> value`` that stores ``value`` in ``acts`` under
    ``prefix + name`` when ``acts`` is a dict, and does nothing otherwise."""

    def keep(name: str, value: T_) -> T_:
        if acts is not None:
            acts[prefix + name] = value  # type: ignore[assignment]
        return value

    return keep


@dataclass(frozen=True)
class _Dropout:
    """Dropout while training, at GPT-2's three sites with one rate ``p`` (Hugging Face's
    ``embd_pdrop``, ``attn_pdrop`` and ``resid_pdrop``): the embedding's output, the attention
    probabilities, and each residual branch's output before it is added. The masks come from
    ``rng`` in the order of the forward pass, so the same generator state gives the same masks.
    """

    p: float
    rng: np.random.Generator


def _dropped(
    drop: _Dropout | None, keep: Callable[[str, np.ndarray], np.ndarray], name: str, x: np.ndarray
) -> np.ndarray:
    """``x`` through a dropout site: with ``drop``, ``layers.dropout`` of it, its mask recorded
    by ``keep`` as ``name`` for the backward; without, ``x`` itself (no mask made, nothing
    drawn, so training without dropout costs nothing extra)."""
    if drop is None:
        return x
    y, mask = dropout(x, drop.p, drop.rng)
    keep(name, mask)
    return y


def check_params(config: GPTConfig, params: dict[str, np.ndarray]) -> None:
    """Check that ``params`` has exactly the names and shapes ``config`` needs."""
    expected = param_shapes(config)
    missing = [k for k in expected if k not in params]
    extra = [k for k in params if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if extra:
            parts.append(f"unexpected {_few(extra)}")
        raise checkpoint.CheckpointError("parameters do not match the config: " + "; ".join(parts))
    for name, shape in expected.items():
        got = tuple(np.shape(params[name]))
        if got != shape:
            raise checkpoint.CheckpointError(
                f"tensor {name!r} has shape {got} but the config (n_layer={config.n_layer}, "
                f"n_head={config.n_head}, n_embd={config.n_embd}, n_ctx={config.n_ctx}, "
                f"vocab_size={config.vocab_size}) needs {shape}"
            )


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _from_hf_names(
    tensors: dict[str, np.ndarray], config: GPTConfig, source: Path
) -> dict[str, np.ndarray]:
    """Hugging Face GPT-2 tensor names -> numpylm's (the same names, without ``transformer.``)."""
    params: dict[str, np.ndarray] = {}
    lm_head = None
    for name, t in tensors.items():
        name = name.removeprefix("transformer.")
        if name.endswith(_BUFFER_SUFFIXES):
            continue  # the causal mask stored as a buffer; numpylm builds its own
        if name == "lm_head.weight":
            lm_head = t
            continue
        params[name] = t
    if (
        lm_head is not None
        and "wte.weight" in params
        and lm_head.shape != params["wte.weight"].shape
    ):
        raise checkpoint.CheckpointError(
            f"{source}: lm_head.weight has shape {lm_head.shape} but wte.weight has "
            f"{params['wte.weight'].shape}; GPT-2 ties them"
        )
    if "wte.weight" not in params and lm_head is not None:
        params["wte.weight"] = lm_head
    try:
        check_params(config, params)
    except checkpoint.CheckpointError as e:
        raise checkpoint.CheckpointError(f"{source}: {e}") from None
    return params


@functools.cache
def _keep_freed_memory() -> None:
    """Ask glibc's allocator to keep freed memory for reuse rather than give it back to the OS.

    A training step creates and frees dozens of arrays of a few MB. By default glibc returns
    such blocks to the OS on ``free`` and page-faults fresh zeroed pages in on the next
    allocation, which costs 15-20% of a step (PyTorch avoids it with its caching allocator).
    Raising the mmap and trim thresholds makes the next step reuse the same memory (the process
    stays at its peak size between steps, rather than shrinking and growing again). Runs once
    per process, on Linux with glibc; elsewhere it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # blocks up to 32 MB come from the reusable heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and the heap is not trimmed below 1 GB of free space
