"""The Llama family's files: Hugging Face's ``config.json`` and tensor names (``model_type``
``llama`` and ``qwen2``), and llama.cpp's GGUF (``general.architecture`` ``llama`` and
``qwen2``).

numpylm's parameter names are Hugging Face's without the ``model.`` prefix, so a Hugging Face
directory is mostly checked, not translated: only the maps that numpylm keeps as one matrix
(``JOINED``: query, key and value; gate and up) are stacked on reading and cut apart on
writing. A GGUF file is read with the ``gguf`` package, llama.cpp's own reader (nothing
here parses the format), its quantised tensors expanded to float32 with
``gguf.quants.dequantize``, and its names and metadata translated.

Whatever numpylm does not compute is refused, naming the key that asks for it: another
architecture, RoPE scaling, a sliding window that is on, biases the family does not have, an
unknown quantisation type, a model's own code (``auto_map``). A feature counts when it is on,
not when its key is present (Qwen2.5 has ``sliding_window`` with ``use_sliding_window: false``).

This module works on dicts and arrays and knows nothing of the model class: ``model.py`` passes
its config class and its ``param_shapes`` in.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ... import memory
from ...checks import positive_int
from ...io import checkpoint, formats
from ...io.checkpoint import CheckpointError

Config = TypeVar("Config")
Params = dict[str, np.ndarray]
Shapes = dict[str, tuple[int, ...]]

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
"""The Hugging Face ``model_type`` values (and GGUF ``general.architecture`` values) numpylm
reads, with the ``transformers`` class of each. Qwen2 is Llama with biases on the query, key
and value maps."""

GGUF_SUFFIX = ".gguf"
_PREFIX = "model."  # Hugging Face's prefix for every tensor but lm_head.weight

# --- Hugging Face config.json -------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
    """A Hugging Face ``config.json`` (as a dict) of ``model_type`` ``llama`` or ``qwen2`` ->
    ``LlamaConfig``'s fields, refusing what numpylm does not compute (see the module's
    docstring). Every refusal is a ``CheckpointError`` that names ``source`` and the key."""
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise CheckpointError(
            f"{source}: model_type is {model_type!r}; numpylm's Llama family reads "
            f"{' and '.join(map(repr, ARCHITECTURES))} (and GPT-2 is numpylm.GPT)"
        )
    if hf.get("auto_map") or hf.get("trust_remote_code"):
        key = "auto_map" if hf.get("auto_map") else "trust_remote_code"
        raise CheckpointError(
            f"{source}: {key} asks to run the model's own Python code (trust_remote_code); "
            "numpylm never runs code from a model's files"
        )
    _refuse_hf_features(hf, model_type, source)

    def count(key: str, default: int | None = None) -> int:
        value = hf.get(key, default)
        if value is None:
            raise CheckpointError(f"{source}: {key} is missing; the file is not a complete config")
        try:
            return positive_int(key, value)
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from None

    n_head = count("num_attention_heads")
    n_embd = count("hidden_size")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != n_embd // n_head:
        raise CheckpointError(
            f"{source}: head_dim={head_dim!r} is not hidden_size // num_attention_heads "
            f"({n_embd // n_head}); numpylm computes heads of hidden_size // num_attention_heads"
        )
    rope = hf.get("rope_parameters") or {}
    tie = hf.get("tie_word_embeddings", False)  # both transformers classes default to False
    if not isinstance(tie, bool):
        raise CheckpointError(f"{source}: tie_word_embeddings must be true or false, got {tie!r}")
    return {
        "vocab_size": count("vocab_size"),
        "n_ctx": count("max_position_embeddings"),
        "n_layer": count("num_hidden_layers"),
        "n_head": n_head,
        "n_kv_head": count("num_key_value_heads", n_head),
        "n_embd": n_embd,
        "n_hidden": count("intermediate_size"),
        # transformers 5 writes rope_parameters; earlier versions rope_theta. Default: 10,000
        "rope_theta": _number(source, "rope_theta", rope.get("rope_theta", hf.get("rope_theta"))),
        "norm_eps": _number(source, "rms_norm_eps", hf.get("rms_norm_eps", 1e-6)),
        "tie_word_embeddings": tie,
        "qkv_bias": model_type == "qwen2",  # Qwen2 always has them, Llama never (see below)
    }


def _refuse_hf_features(hf: dict[str, Any], model_type: str, source: str) -> None:
    """Refuse a config that turns on what numpylm does not compute, naming the key."""
    rope = hf.get("rope_parameters") or {}
    on = {  # key: (its value, what numpylm computes instead) for each feature that is on
        "rope_scaling": (hf.get("rope_scaling"), None),
        "rope_parameters.rope_type": (rope.get("rope_type", "default"), "default"),
        "hidden_act": (hf.get("hidden_act", "silu"), "silu"),
        "mlp_bias": (hf.get("mlp_bias", False), False),
        "quantization_config": (hf.get("quantization_config"), None),
    }
    if model_type == "llama":  # biases on q, k, v and o: not Qwen2's q, k, v only
        on["attention_bias"] = (hf.get("attention_bias", False), False)
    if model_type == "qwen2":  # sliding_window alone is a number kept for when it is on
        on["use_sliding_window"] = (hf.get("use_sliding_window", False), False)
        sliding = [t for t in hf.get("layer_types") or [] if t != "full_attention"]
        on["layer_types"] = (sorted(set(sliding)) or None, None)
    for key, (value, expected) in on.items():
        if value != expected:
            raise CheckpointError(
                f"{source}: {key}={value!r} is not supported: numpylm computes the Llama family "
                f"with {key}={expected!r} and would compute this model wrongly"
            )


def _number(source: str, key: str, value: Any, default: float = 10000.0) -> float:
    """A positive finite number from a config (``default`` when it is absent)."""
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise CheckpointError(f"{source}: {key} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise CheckpointError(f"{source}: {key} must be finite, got {value!r}")
    return float(value)


def config_to_hf(fields: dict[str, Any]) -> dict[str, Any]:
    """``LlamaConfig`` fields as a Hugging Face ``config.json``: ``qwen2`` when the q/k/v maps
    have biases, ``llama`` otherwise. RoPE's base is written both ways transformers has read
    it (``rope_theta``, and transformers 5's ``rope_parameters``)."""
    model_type = "qwen2" if fields["qkv_bias"] else "llama"
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": fields["vocab_size"],
        "max_position_embeddings": fields["n_ctx"],
        "num_hidden_layers": fields["n_layer"],
        "num_attention_heads": fields["n_head"],
        "num_key_value_heads": fields["n_kv_head"],
        "hidden_size": fields["n_embd"],
        "head_dim": fields["n_embd"] // fields["n_head"],
        "intermediate_size": fields["n_hidden"],
        "hidden_act": "silu",
        "rms_norm_eps": fields["norm_eps"],
        "rope_theta": fields["rope_theta"],
        "rope_parameters": {"rope_type": "default", "rope_theta": fields["rope_theta"]},
        "rope_scaling": None,
        "tie_word_embeddings": fields["tie_word_embeddings"],
        "attention_dropout": 0.0,
    }
    if model_type == "llama":
        return hf | {"attention_bias": False, "mlp_bias": False}
    return hf | {"use_sliding_window": False, "sliding_window": None}


# --- Hugging Face tensors -----------------------------------------------------------------------

JOINED = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
}
"""numpylm's stacked maps in each block -> the files' maps, whose rows they stack in order."""


def _stacked(fields: dict[str, Any]) -> Iterator[tuple[str, list[str], tuple[int, ...]]]:
    """For every stacked tensor a model of ``fields`` can have (weights and biases): its name,
    its parts' names in the files, and the rows of each part ((Q, KV, KV) or (F, F))."""
    kv = fields["n_kv_head"] * (fields["n_embd"] // fields["n_head"])
    rows = {
        "self_attn.qkv_proj": (fields["n_embd"], kv, kv),
        "mlp.gate_up_proj": (fields["n_hidden"],) * 2,
    }
    for i, joined, kind in itertools.product(
        range(fields["n_layer"]), JOINED, (".weight", ".bias")
    ):
        parts = [f"layers.{i}.{part}{kind}" for part in JOINED[joined]]
        yield f"layers.{i}.{joined}{kind}", parts, rows[joined]


def split_shapes(shapes: Shapes, fields: dict[str, Any]) -> Shapes:
    """numpylm's parameter shapes -> the files' (each stacked map cut into its parts)."""
    out = dict(shapes)
    for name, parts, rows in _stacked(fields):
        if name in out:
            shape = out.pop(name)
            out |= {part: (n, *shape[1:]) for part, n in zip(parts, rows, strict=True)}
    return out


def join(params: Params, fields: dict[str, Any]) -> Params:
    """The files' tensors (checked against ``split_shapes``) -> numpylm's, in place: each
    block's query, key and value maps stacked into ``qkv_proj`` (weights and biases), gate and
    up into ``gate_up_proj``. Each part leaves ``params`` as soon as it is stacked, so loading
    needs one stacked map more than the weights, not a second copy of them. Returns
    ``params``."""
    for name, parts, _ in _stacked(fields):
        if parts[0] in params:
            params[name] = np.concatenate([params.pop(part) for part in parts])
    return params


def split(params: Params, fields: dict[str, Any]) -> Params:
    """numpylm's parameters -> the files' tensors, each stacked map cut into its parts (views:
    nothing is copied)."""
    out = dict(params)
    for name, parts, rows in _stacked(fields):
        if name in out:
            pieces = np.split(out.pop(name), np.cumsum(rows)[:-1])
            out |= dict(zip(parts, pieces, strict=True))
    return out


def params_from_hf(tensors: Params, tied: bool, source: Path) -> Params:
    """Hugging Face tensors (``model.layers.0.self_attn.q_proj.weight``, ``lm_head.weight``)
    -> numpylm's names (without ``model.``), floating point only. The rotary tables some old
    files store (``rotary_emb.inv_freq``) are skipped: numpylm computes its own. With a tied
    head, an ``lm_head.weight`` beside the embedding must equal it."""
    params: Params = {}
    for name, t in tensors.items():
        name = name.removeprefix(_PREFIX)
        if name.endswith(".rotary_emb.inv_freq"):
            continue
        formats.check_floating(t, name, source)
        params[name] = t
    if tied and "lm_head.weight" in params:
        head = params.pop("lm_head.weight")
        embed = params.setdefault("embed_tokens.weight", head)
        if embed is not head and not np.array_equal(embed, head):
            raise CheckpointError(
                f"{source}: tie_word_embeddings is true but lm_head.weight differs from "
                "model.embed_tokens.weight; the config and the weights disagree"
            )
    return params


def params_to_hf(params: Params, dtype: np.dtype[Any]) -> Params:
    """numpylm's parameters -> the tensors of a Hugging Face file, converted to ``dtype``."""
    return {
        (name if name == "lm_head.weight" else _PREFIX + name): p.astype(dtype, copy=False)
        for name, p in params.items()
    }


# --- GGUF ---------------------------------------------------------------------------------------

GGUF_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}
"""llama.cpp's tensor names -> numpylm's, outside the blocks."""

GGUF_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
"""``blk.N.<name>.weight`` (and ``.bias``) -> ``layers.N.<name>.weight``."""

GGUF_TYPES = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip
"""The tensor types numpylm reads from a GGUF file: floats, and the quantisations whose blocks
``gguf.quants.dequantize`` expands (llama.cpp's classic and K-quants)."""

_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def open_gguf(path: Path) -> Any:
    """A ``gguf.GGUFReader`` of the file (reading its header takes seconds for a real model:
    ``numpylm.load`` reads the model and the tokenizer from the one reader).

    Raises:
        CheckpointError: a file the ``gguf`` package cannot read.
    """
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, EOFError) as e:
        raise CheckpointError(
            f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); it is corrupt, "
            "truncated, or another kind of file"
        ) from None


def read_gguf(path: Path, reader: Any = None) -> tuple[dict[str, Any], Params]:
    """A GGUF file -> (``LlamaConfig``'s fields, every tensor as float32 under numpylm's name).
    ``reader``: the file's ``open_gguf`` already made (None: it is opened here).

    The tensors are copied out of the file (so it can change or go away afterwards) and the
    query and key rows of ``llama`` files put back in Hugging Face's order (``_unpermute``).

    Raises:
        CheckpointError: a file the ``gguf`` package cannot read; anything numpylm does not
            compute, naming the key or tensor that asks for it.
    """
    from gguf.quants import dequantize

    reader = open_gguf(path) if reader is None else reader
    fields = _gguf_config(reader, path)
    params: Params = {}
    for t in reader.tensors:
        name = _gguf_name(t.name, path)
        kind = t.tensor_type.name
        if kind not in GGUF_TYPES:
            raise CheckpointError(
                f"{path}: tensor {t.name!r} is quantised as {kind}, which numpylm does not "
                f"read (it reads {', '.join(GGUF_TYPES)}); get the model in one of those"
            )
        w = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)  # a copy, float32
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists the fastest axis first
        if w.shape != shape:
            raise CheckpointError(
                f"{path}: tensor {t.name!r} dequantizes to shape {w.shape}, its header says "
                f"{shape}; the file is corrupt"
            )
        params[name] = w
    if reader.fields["general.architecture"].contents() == "llama":
        for i in range(fields["n_layer"]):
            for proj, heads in (("q", fields["n_head"]), ("k", fields["n_kv_head"])):
                key = f"layers.{i}.self_attn.{proj}_proj.weight"
                if key in params:  # a missing one is reported against the shapes, later
                    params[key] = _unpermute(params[key], heads)
    return fields, params


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's reordering of a query or key map's rows: (n_head * D, C) -> the same.

    For ``llama`` files llama.cpp rotates *adjacent* channels ``(2i, 2i + 1)`` of a head
    together, where Hugging Face (and numpylm's ``rope``) rotate channel ``i`` with
    ``i + D/2``. Its converter therefore reorders each head's rows from ``[first half, second
    half]`` to ``[x_0, x_{D/2}, x_1, x_{D/2+1}, ...]``. numpylm undoes that here, so that one
    RoPE serves every file. (``qwen2`` files are not reordered: llama.cpp rotates halves there.)
    """
    D = w.shape[0] // n_head
    return w.reshape(n_head, D // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(name: str, path: Path) -> str:
    """A GGUF tensor name -> numpylm's, or a refusal naming the tensor."""
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    match = _BLOCK.fullmatch(name)
    if match and match[2] in GGUF_BLOCK_NAMES:
        return f"layers.{match[1]}.{GGUF_BLOCK_NAMES[match[2]]}.{match[3]}"
    why = " (Llama 3.1's RoPE scaling)" if name == "rope_freqs.weight" else ""
    raise CheckpointError(
        f"{path}: tensor {name!r}{why} is not part of the Llama family numpylm computes "
        "(embedding, norms, q/k/v/o, gate/up/down, head); numpylm would compute this model wrongly"
    )


def _gguf_config(reader: Any, path: Path) -> dict[str, Any]:
    """A GGUF file's metadata (``llama.*`` or ``qwen2.*``) -> ``LlamaConfig``'s fields."""
    meta = {name: field.contents() for name, field in reader.fields.items()}
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"{path}: general.architecture is {arch!r}; numpylm reads GGUF files of "
            f"{' and '.join(map(repr, ARCHITECTURES))}"
        )

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise CheckpointError(f"{path}: the metadata key {arch}.{key} is missing")
        return value

    def count(key: str, default: Any = None) -> int:
        try:
            return positive_int(f"{arch}.{key}", get(key, default))
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None

    n_head, n_embd = count("attention.head_count"), count("embedding_length")
    head_size = n_embd // n_head
    refused = {  # key: (its value, what numpylm computes instead), for what must be off
        "rope.scaling.type": (get("rope.scaling.type", "none"), "none"),
        "expert_count": (get("expert_count", 0), 0),
        "attention.sliding_window": (get("attention.sliding_window", 0), 0),
        "rope.dimension_count": (get("rope.dimension_count", head_size), head_size),
        "attention.key_length": (get("attention.key_length", head_size), head_size),
        "attention.value_length": (get("attention.value_length", head_size), head_size),
    }
    for key, (value, expected) in refused.items():
        if value != expected:
            raise CheckpointError(
                f"{path}: {arch}.{key}={value!r} is not supported: numpylm computes the Llama "
                f"family with {expected!r} and would compute this model wrongly"
            )
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    vocab = int(embed.shape[1]) if embed is not None else None  # ggml lists (C, V)
    return {
        "vocab_size": count("vocab_size", vocab),
        "n_ctx": count("context_length"),
        "n_layer": count("block_count"),
        "n_head": n_head,
        "n_kv_head": count("attention.head_count_kv", n_head),
        "n_embd": n_embd,
        "n_hidden": count("feed_forward_length"),
        "rope_theta": _number(str(path), f"{arch}.rope.freq_base", get("rope.freq_base", 1e4)),
        "norm_eps": _number(
            str(path),
            f"{arch}.attention.layer_norm_rms_epsilon",
            get("attention.layer_norm_rms_epsilon"),
        ),
        # llama.cpp ties the head when the file has no output.weight
        "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors),
        "qkv_bias": arch == "qwen2",
    }


# --- Both ---------------------------------------------------------------------------------------


def read(
    path: str | os.PathLike[str],
    make: Callable[..., Config],
    shapes_of: Callable[[Config], Shapes],
    *,
    reader: Any = None,
) -> tuple[Config, Params]:
    """A ``.gguf`` file or a Hugging Face directory (``model_type`` ``llama``/``qwen2``) ->
    ``(make(**fields), params)``, the parameters checked against ``shapes_of(config)``
    (``LlamaConfig`` and ``param_shapes``); ``reader``: a GGUF file's ``open_gguf``, if made.
    Every refusal is a ``CheckpointError`` naming the file."""
    source = Path(path).expanduser()
    if source.suffix == GGUF_SUFFIX or source.is_file():
        if not source.is_file():
            raise FileNotFoundError(f"no GGUF file at {str(source)!r}: check the path")
        fields, params = read_gguf(source, reader)
    else:
        hf, tensors, source = formats.read_model(path)
        fields = config_from_hf(hf, f"{source}/{checkpoint.CONFIG_FILE}")
        params = params_from_hf(tensors, fields["tie_word_embeddings"], source)
        del tensors  # params holds the arrays now: join can free each part as it stacks it
    try:
        config = make(**fields)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e
    memory.check_model(config, 4, "loading", source)  # before the n_layer-long table is made
    try:
        formats.check_shapes(split_shapes(shapes_of(config), fields), params)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    return config, join(params, fields)


def write(
    directory: str | os.PathLike[str], fields: dict[str, Any], params: Params, dtype: Any
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` as ``transformers`` reads them, each
    atomically; ``fields`` are ``LlamaConfig``'s, ``dtype`` float16, float32 or float64."""
    return formats.write_model(
        directory, config_to_hf(fields), split(params, fields), dtype, params_to_hf
    )
