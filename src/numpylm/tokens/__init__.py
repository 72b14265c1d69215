"""Tokens: text to ids and back, the tokenizers of pretrained models, and chat templates."""
