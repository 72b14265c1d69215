"""Files: what the story reads and writes, beside it.

``checkpoint`` reads and writes safetensors and JSON, checking untrusted files; ``formats``
speaks Hugging Face's model folders; ``loading`` finds a model by name (the built-in ones) or
path and returns it with its tokenizer.
"""
