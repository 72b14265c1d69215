"""Copy a trained run into the package as a built-in model (weights stored as float16).

    python examples/package_builtin.py runs/shakespeare              # the default model
    python examples/package_builtin.py runs/chat --name chat         # the chat model

writes ``src/numpylm/builtin/NAME/``: ``config.json`` (with the fingerprint of the tokenizer
the model was trained with), ``model.safetensors`` (float16, half the size; numpylm and
transformers load it back as float32), the tokenizer files, and the run's
``prompt_template.json`` and ``eval_results.json`` when it has them. The model card beside
them says how the run was made and what it measured.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from numpylm import GPT
from numpylm.io.loading import BUILTIN_MODELS, BUILTIN_ROOT
from numpylm.tokens.tokenizer import Tokenizer
from numpylm.training.finetune import TEMPLATE_FILE
from numpylm.training.runs import record_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run directory of `numpylm train`/`finetune`")
    parser.add_argument("--name", choices=list(BUILTIN_MODELS), default="shakespeare")
    args = parser.parse_args()
    out = BUILTIN_ROOT / args.name
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.from_pretrained(args.run)
    record_tokenizer(
        GPT.from_pretrained(args.run).save_pretrained(out, dtype=np.float16), tokenizer
    )
    tokenizer.save_pretrained(out)
    for name in (TEMPLATE_FILE, "eval_results.json"):  # a fine-tuned model's template; figures
        if (args.run / name).is_file():
            shutil.copyfile(args.run / name, out / name)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
