"""GPT-2 (OpenAI, 2019): learned position embeddings, LayerNorm, GELU MLP, multi-head attention.

``model.py`` is the model a learner reads; ``backward.py`` is its training pass.
"""
