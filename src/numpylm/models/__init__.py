"""Part 2 of the story: the transformer, one folder per family of models.

``gpt2/`` is OpenAI's GPT-2: ``model.py`` (its configuration, parameters and forward pass) and
``backward.py`` (training's forward and backward). What every family shares sits beside the
folders, and a reader can skip it: ``cache`` (the KV cache), ``backends`` and ``parallel`` (the
same forward pass spread over the cores), ``padding`` (batches of prompts of different
lengths) and ``initialisation`` (random weights). The layers the models are built from are
``numpylm.layers``.
"""
