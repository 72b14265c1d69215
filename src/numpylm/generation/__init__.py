"""Part 3 of the story: one token at a time.

``loop`` is the loop for one prompt (``generate``): run the model, sample one token, append it,
repeat. Beside it: ``context`` (the KV cache between steps and the context window), ``batching``
(several prompts at once), ``streaming`` (text as it is written, stop strings) and ``tracing``
(the step-by-step table of probabilities).
"""

from .loop import PromptIds, check_prompt, generate, make_rng, start_id

__all__ = ["PromptIds", "check_prompt", "generate", "make_rng", "start_id"]
