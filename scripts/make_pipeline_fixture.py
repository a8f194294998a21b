#!/usr/bin/env python3
"""Build the model that `laconic run recipes/quickstart.toml --size tiny` trains.

It is the 2-layer random-weight `llama` fixture of laconic-infer (made by
scripts/make_fixtures.py) with a longer context: `max_position_embeddings` 1024 instead of 256,
so that the procedural teacher's traces (300-400 tokens of its 512-entry vocabulary) fit. The
weights and tokenizer are unchanged; transformers loads the result back and its logits on a
reference text equal the source fixture's (RoPE does not depend on the context length).

    /work/pyenv/bin/python scripts/make_pipeline_fixture.py

writes crates/laconic-cli/tests/fixtures/tiny-llama-1k/. Deterministic: running it twice gives
the same files.
"""

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "crates/laconic-infer/tests/fixtures/llama"
OUT = ROOT / "crates/laconic-cli/tests/fixtures/tiny-llama-1k"
CONTEXT = 1024


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ["model.safetensors", "tokenizer.json", "generation_config.json"]:
        shutil.copyfile(SRC / name, OUT / name)
    config = json.loads((SRC / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    tok_config = json.loads((SRC / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = CONTEXT
    (OUT / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1) + "\n")

    # The copy computes what the source computes, at positions past the old context too.
    ids = torch.tensor([[(7 * i + 3) % 500 for i in range(300)]])
    src = AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.float32)
    new = AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32)
    assert new.config.max_position_embeddings == CONTEXT
    with torch.no_grad():
        a = src(ids).logits
        b = new(ids).logits
    diff = (a - b).abs().max().item()
    assert diff == 0.0, f"logits differ by {diff}"
    print(f"wrote {OUT} (context {CONTEXT}; logits on 300 tokens equal the source's)")


if __name__ == "__main__":
    main()
