"""Part 1 of the story: text becomes tokens.

``tokenizer`` wraps ``tiktoken`` (GPT-2's encoding, or a vocabulary numpylm learned itself);
``bpe`` learns such a vocabulary, a byte-level BPE, from text. Beside them: ``pretrained``
reads the vocabularies of pretrained models (a GGUF file, a ``tokenizer.json``) into the same
wrapper, and ``chat_template`` writes a conversation the way a chat model was trained to read it.
"""
