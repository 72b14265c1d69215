"""Part 1 of the story: text becomes tokens.

``tokenizer`` wraps ``tiktoken`` (GPT-2's encoding, or a vocabulary numpylm learned itself);
``bpe`` learns such a vocabulary, a byte-level BPE, from text.
"""
