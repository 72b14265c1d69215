"""The Llama family (Llama, SmolLM2, Qwen2): its model (``model``) and its files (``weights``)."""

from .model import Llama, LlamaConfig, param_shapes

__all__ = ["Llama", "LlamaConfig", "param_shapes"]
