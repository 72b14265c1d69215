"""Parts 5 and 6 of the story: learning from text, then learning to answer.

``train`` is next-token prediction over batches from ``data``, with ``optim``'s AdamW;
``finetune`` teaches a trained model to answer (supervised fine-tuning on ``instructions`` and
``chat_data``). ``runs`` keeps their run directories: checkpoints, resuming, locks.
"""
