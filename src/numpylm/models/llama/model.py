"""The Llama family in NumPy (Llama, SmolLM2, Qwen2): the configuration, the parameters, and the
forward pass with its KV cache, beside GPT-2's (``models.gpt2.model``) and with its interface.

``Llama.forward`` reads top to bottom as GPT-2's does, with the changes since 2019:

    ids (B, T) -> token embedding (no position embedding)          (B, T, C)
               -> n_layer x block:  x = x + attn(rms_norm(x))      queries and keys turned by
                                                                     RoPE; H_kv key/value heads
                                    x = x + mlp(rms_norm(x))       SwiGLU   (B, T, C)
               -> rms_norm -> LM head (tied to the embedding, or its own)   (B, T, V) logits

``model.params`` is a dict of plain arrays named as Hugging Face's ``LlamaForCausalLM`` names
them, without its ``model.`` prefix, and shaped as it stores them: a linear map's weight is
(out, in), so the forward pass multiplies by its transpose (a view: nothing is copied). Two
differences: the query, key and value maps are kept as one matrix, ``qkv_proj`` (as GPT-2's
``c_attn``), and the gate and up maps as one, ``gate_up_proj``. Each is then read by one
matrix product instead of three or two; a decode step is bound by reading the weights, and one
large product reads them faster than several small ones. The new layers are in
``numpylm.layers``; files, which keep the maps apart, are ``weights``'s business.
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
from ...layers import (
    attention,
    cross_entropy,
    grouped_query_attention,
    merge_heads,
    rms_norm,
    rope,
    rope_cos_sin,
    split_heads,
    swiglu,
)
from ..backends import PLAIN, Backend, decoding_layout, get_backend
from ..cache import KVCache, new_cache
from ..padding import positions_and_mask
from . import weights

DType = np.dtype[Any] | type
PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a Llama-family model. The defaults are SmolLM2-135M's.

    Attributes:
        vocab_size: number of tokens ``V``.
        n_ctx: the longest sequence the model reads (``max_position_embeddings``); RoPE has no
            table to run out of, but the model was trained up to here.
        n_layer: number of transformer blocks.
        n_head: query heads ``H`` per block; must divide ``n_embd``.
        n_kv_head: key/value heads ``H_kv``; must divide ``n_head`` (``n_head``: no grouping).
        n_embd: channels ``C`` of the residual stream.
        n_hidden: the MLP's width ``F`` (``intermediate_size``).
        rope_theta: RoPE's base: pair ``i`` of a head's channels turns by
            ``theta ** (-2i / D)`` radians per position.
        norm_eps: RMSNorm's epsilon.
        tie_word_embeddings: the LM head is the token embedding (no ``lm_head.weight``).
        qkv_bias: the query, key and value maps have biases (Qwen2); no other map has one.
    """

    vocab_size: int = 49152
    n_ctx: int = 8192
    n_layer: int = 30
    n_head: int = 9
    n_kv_head: int = 3
    n_embd: int = 576
    n_hidden: int = 1536
    rope_theta: float = 100000.0
    norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        fields = dataclasses.asdict(self)
        shape = ("vocab_size", "n_ctx", "n_layer", "n_head", "n_embd")
        checks.model_shape("LlamaConfig", {k: fields[k] for k in shape})
        for name in ("n_kv_head", "n_hidden"):
            checks.positive_int(f"LlamaConfig.{name}", fields[name])
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"LlamaConfig.n_head ({self.n_head}) must be divisible by n_kv_head "
                f"({self.n_kv_head}): each key/value head serves the same number of query heads"
            )
        if self.head_size % 2:
            raise ValueError(
                f"LlamaConfig: the head size n_embd // n_head = {self.head_size} must be even "
                "(RoPE turns its channels in pairs)"
            )
        for name in ("rope_theta", "norm_eps"):
            value = checks.as_float(f"LlamaConfig.{name}", fields[name])
            checks.in_range(f"LlamaConfig.{name}", value, "a finite number > 0", value > 0)

    def num_params(self) -> int:
        """The parameters of a model of this shape (``param_shapes``, summed without building
        it, so that a huge ``n_layer`` is refused before the table is made)."""
        C, F, V = self.n_embd, self.n_hidden, self.vocab_size
        Q, KV = self.n_head * self.head_size, self.n_kv_head * self.head_size
        block = 2 * C + 2 * Q * C + 2 * KV * C + 3 * F * C + (Q + 2 * KV) * self.qkv_bias
        return V * C * (1 if self.tie_word_embeddings else 2) + self.n_layer * block + C

    def num_tensors(self) -> int:
        """The number of arrays in ``param_shapes``."""
        per_layer = 6 + self.qkv_bias
        return 2 + self.n_layer * per_layer + (not self.tie_word_embeddings)

    @property
    def head_size(self) -> int:
        """Channels per attention head, ``D = n_embd // n_head``."""
        return self.n_embd // self.n_head


def param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every parameter, in Hugging Face's order (weights as (out, in)).
    ``qkv_proj`` stacks the query, key and value maps' rows (Q + 2 KV of them), and
    ``gate_up_proj`` the gate's and the up map's (2F)."""
    V, C, F = config.vocab_size, config.n_embd, config.n_hidden
    Q, KV = config.n_head * config.head_size, config.n_kv_head * config.head_size  # C, < C
    # fmt: off
    block = {
        "input_layernorm.weight": (C,),
        "self_attn.qkv_proj.weight": (Q + 2 * KV, C),
        **({"self_attn.qkv_proj.bias": (Q + 2 * KV,)} if config.qkv_bias else {}),
        "self_attn.o_proj.weight": (C, Q),
        "post_attention_layernorm.weight": (C,),
        "mlp.gate_up_proj.weight": (2 * F, C),
        "mlp.down_proj.weight": (C, F),
    }
    # fmt: on
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (V, C)}
    for i in range(config.n_layer):
        shapes |= {f"layers.{i}.{name}": shape for name, shape in block.items()}
    shapes["norm.weight"] = (C,)
    return shapes if config.tie_word_embeddings else shapes | {"lm_head.weight": (V, C)}


def init_params(config: LlamaConfig, seed: int = 0, dtype: DType = np.float32) -> dict[str, Any]:
    """Random parameters as Hugging Face initialises a Llama: weights N(0, 0.02), biases 0,
    RMSNorm gains 1. The same seed gives the same weights."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("norm.weight"):
            params[name] = np.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            params[name] = np.zeros(shape, dtype=dtype)
        else:
            params[name] = rng.standard_normal(shape, dtype=dtype) * 0.02
    return params


def _looked_up(config: LlamaConfig) -> tuple[str, ...]:
    """The matrices the forward only indexes: an untied model's embedding (a tied one is also
    the LM head). ``backends.decoding_layout`` lays out the others for a decoding step."""
    return () if config.tie_word_embeddings else ("embed_tokens.weight",)


class Llama:
    """A Llama-family language model whose parameters are plain NumPy arrays.

    ``Llama(config, seed=0)`` is randomly initialised; ``Llama.from_pretrained`` loads a
    Hugging Face directory or a GGUF file. It is called as ``GPT`` is: ``model(ids, cache=...,
    attention_mask=..., last_only=...)`` maps token ids to next-token logits.
    """

    def __init__(
        self,
        config: LlamaConfig,
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
        params = init_params(config, seed, self.dtype) if params is None else params
        shapes = param_shapes(config)
        formats.check_shapes(shapes, params, f"the config ({config})")
        params = {k: np.asarray(v, dtype=self.dtype) for k, v in params.items()}
        self.params: dict[str, np.ndarray] = decoding_layout(params, _looked_up(config))

    def __repr__(self) -> str:
        c, n = self.config, self.num_params()
        shape = f"n_layer={c.n_layer}, n_head={c.n_head}, n_kv_head={c.n_kv_head}, "
        shape += f"n_embd={c.n_embd}, n_hidden={c.n_hidden}, n_ctx={c.n_ctx}"
        return f"Llama({shape}, vocab_size={c.vocab_size}, params={n:,}, dtype={self.dtype})"

    def num_params(self) -> int:
        """Number of parameters (a tied LM head is counted once)."""
        return sum(p.size for p in self.params.values())

    @classmethod
    def from_pretrained(cls, path: PathArg, dtype: DType = np.float32) -> Llama:
        """Load a ``.gguf`` file (dequantized to float32) or a Hugging Face directory whose
        ``config.json`` has ``model_type`` ``llama`` or ``qwen2`` (``weights.read``)."""
        config, params = weights.read(path, LlamaConfig, param_shapes)
        # laid out here, in the loaded dict, so that each replaced array is freed at once
        return cls(config, dtype=dtype, params=decoding_layout(params, _looked_up(config)))

    def save_pretrained(self, directory: PathArg, dtype: DType | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` atomically, as ``transformers``
        reads them (``LlamaForCausalLM``, or ``Qwen2ForCausalLM`` for q/k/v biases)."""
        stored = self.dtype if dtype is None else dtype
        return weights.write(directory, dataclasses.asdict(self.config), self.params, stored)

    def new_cache(self, batch_size: int = 1, capacity: int | None = None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences of the ``n_kv_head`` key/value heads
        (not ``n_head``: that is GQA's saving); it grows as they do, up to ``n_ctx`` tokens
        (``capacity``: the positions to hold from the start)."""
        return new_cache(self.cache_shape(batch_size), self.dtype, capacity)

    def cache_shape(self, batch_size: int) -> tuple[int, int, int, int, int]:
        """The shape of a cache's keys (and values): (n_layer, B, H_kv, n_ctx, D)."""
        c = self.config
        return (c.n_layer, batch_size, c.n_kv_head, c.n_ctx, c.head_size)

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

        The arguments and the result are ``GPT.forward``'s: (B, T) or (T,) ids, a ``KVCache``
        from ``new_cache`` (the ids are then the new tokens after the cached ones), a (B, T)
        ``attention_mask`` (1 for tokens, 0 for left padding), ``last_only`` (the last
        position's logits only). Returns (B, T, V) logits, or (T, V) for 1-D ids.
        """
        p, c = self.params, self.config
        ids2d = checks.token_ids(ids, c.vocab_size)
        B, T = ids2d.shape
        be = get_backend(backend or self.backend, rows=B * T)  # by default: plain, or threads
        start = checks.cache_room(cache, T, self.cache_shape(B), self.dtype)
        mask = None if attention_mask is None else checks.attention_mask(attention_mask, B, T)
        # pos: (T,) or (B, T); allowed: which keys each new token may see, (T, L) or None
        pos, allowed, pad = positions_and_mask(T, start, mask, cache.padding if cache else None)
        rot = rope_cos_sin(pos, c.head_size, c.rope_theta, self.dtype)  # the positions' angles

        with be.session(B * T):
            x = p["embed_tokens.weight"][ids2d]  # (B, T, C): no position embedding, RoPE
            for i in range(c.n_layer):
                x = self.block(i, x, cache, allowed, rot, be)  # (B, T, C)
            if last_only:
                x = x[:, -1:]  # (B, 1, C)
            x = rms_norm(x, p["norm.weight"], c.norm_eps)
            head = p["embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"]
            logits = be.linear(x, head.T)  # (B, T, V)
        if cache is not None:
            cache.length, cache.padding = start + T, pad
        return logits[0] if np.ndim(ids) == 1 else logits

    __call__ = forward

    def hidden_states(self, ids: checks.TokenIds) -> list[np.ndarray]:
        """The residual stream, as ``GPT.hidden_states``: the (B, T, C) embeddings, then each
        block's output, n_layer + 1 arrays ((T, C) each for 1-D ids), before the final
        ``rms_norm``. (``transformers``' ``output_hidden_states`` gives the same, except that
        its last entry is after the final norm.)"""
        return self._recorded(ids)[0]

    def attention_maps(self, ids: checks.TokenIds) -> list[np.ndarray]:
        """Where each token looks, as ``GPT.attention_maps``: every layer's (B, H, T, T)
        attention probabilities ((H, T, T) for 1-D ids), ``[b, h, t, s]`` how much query head
        ``h`` of token ``t`` attends to token ``s``. The heads of a group read the same keys
        but with their own queries, so each has its own map."""
        return self._recorded(ids)[1]

    def loss(self, ids: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> float:
        """The mean next-token cross-entropy of predicting ``targets`` from ``ids``, forward
        only (for evaluation; numpylm does not train this family). The arguments are
        ``GPT.loss``'s: (B, T) ids, targets (-1: does not count), mask (False: does not
        count)."""
        c = self.config
        ids2d, targets2d, mask2d = checks.training_batch(ids, targets, mask, c.vocab_size, c.n_ctx)
        return cross_entropy(self(ids2d), targets2d, mask2d)[0]

    def _recorded(self, ids: checks.TokenIds) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The forward pass over a window of ``ids`` on the plain backend, keeping every
        block's input (and the last block's output) and attention probabilities."""
        c = self.config
        ids2d = checks.token_window(ids, c.vocab_size, c.n_ctx)
        B, T = ids2d.shape
        pos, allowed, _ = positions_and_mask(T, 0, None, None)
        rot = rope_cos_sin(pos, c.head_size, c.rope_theta, self.dtype)
        maps: list[np.ndarray] = []

        def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Any) -> np.ndarray:
            y, att = attention(q, k, v, mask)  # (B H_kv, G, T, T): grouped as the caller has it
            maps.append(att.reshape(B, c.n_head, T, T))
            return y

        be = dataclasses.replace(PLAIN, attention=attend)
        x = self.params["embed_tokens.weight"][ids2d]
        states = [x]
        for i in range(c.n_layer):
            x = self.block(i, x, None, allowed, rot, be)
            states.append(x)
        if np.ndim(ids) == 1:
            return [s[0] for s in states], [m[0] for m in maps]
        return states, maps

    def block(
        self,
        i: int,
        x: np.ndarray,
        cache: KVCache | None,
        allowed: np.ndarray | None,
        rot: tuple[np.ndarray, np.ndarray],
        be: Backend,
    ) -> np.ndarray:
        """Transformer block ``i``, (B, T, C) -> (B, T, C): attention, then the MLP, each added
        to the residual stream. ``rot`` is the new tokens' ``(cos, sin)`` (``rope_cos_sin``)."""
        p, h, c, T = self.params, f"layers.{i}.self_attn.", self.config, x.shape[1]
        H, H_kv = c.n_head, c.n_kv_head
        start = 0 if cache is None else cache.length  # forward updates it after the last block

        # Attention: H query heads, H_kv key/value heads; queries and keys turned by position.
        a = rms_norm(x, p[f"layers.{i}.input_layernorm.weight"], c.norm_eps)
        qkv = be.linear(a, p[h + "qkv_proj.weight"].T, p.get(h + "qkv_proj.bias"))
        qkv = split_heads(qkv, H + 2 * H_kv)  # (B, T, (H + 2 H_kv) D) -> (B, H + 2 H_kv, T, D)
        qk = rope(qkv[:, : H + H_kv], *rot)  # queries and keys turned; values carry no position
        q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + H_kv :]  # (B, H, T, D), 2 x (B, H_kv, T, D)
        if cache is not None:  # store the new keys and values after the cached ones
            cache.k[i, :, :, start : start + T], cache.v[i, :, :, start : start + T] = k, v
            k, v = cache.k[i, :, :, : start + T], cache.v[i, :, :, : start + T]  # (B,H_kv,L,D)
        y = merge_heads(grouped_query_attention(be.attention, q, k, v, allowed))  # (B, T, C)
        x = x + be.linear(y, p[h + "o_proj.weight"].T)

        # MLP: two projections to F channels, one gating the other (SwiGLU), then back to C.
        m = rms_norm(x, p[f"layers.{i}.post_attention_layernorm.weight"], c.norm_eps)
        gate_up = be.linear(m, p[f"layers.{i}.mlp.gate_up_proj.weight"].T)  # (B, T, 2F)
        gate, up = gate_up[..., : c.n_hidden], gate_up[..., c.n_hidden :]  # 2 x (B, T, F)
        return x + be.linear(swiglu(gate, up), p[f"layers.{i}.mlp.down_proj.weight"].T)
