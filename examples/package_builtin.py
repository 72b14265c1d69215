"""Copy a trained run into the package as the built-in model (weights stored as float16).

    python examples/package_builtin.py runs/shakespeare

writes ``src/numpylm/builtin/shakespeare/``: ``config.json``, ``model.safetensors`` (float16,
half the size; numpylm and transformers load it back as float32), and the tokenizer files.
The model card beside them says how the run was made and what it measured.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from numpylm import GPT
from numpylm.loading import BUILTIN_DIR
from numpylm.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run directory of `numpylm train`")
    args = parser.parse_args()
    model = GPT.from_pretrained(args.run)
    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(BUILTIN_DIR, dtype=np.float16)
    Tokenizer.from_pretrained(args.run).save_pretrained(BUILTIN_DIR)
    if (args.run / "eval_results.json").is_file():  # the run's own validation figures
        shutil.copyfile(args.run / "eval_results.json", BUILTIN_DIR / "eval_results.json")
    size = sum(f.stat().st_size for f in BUILTIN_DIR.iterdir()) / 1e6
    print(f"wrote {BUILTIN_DIR} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
