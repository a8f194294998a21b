#!/usr/bin/env python3
"""Load laconic's exports with transformers, peft and gguf-py; write the reference logits.

``crates/laconic-train/tests/export.rs`` (test
``exports_load_in_transformers_with_the_same_logits``) trains two tiny runs on the
laconic-infer fixtures, fixed seed and steps, and exports them:

* ``llama-lora-merged/``  LoRA run (llama fixture), adapters merged: a plain HF directory;
* ``llama-lora-peft/``    the same run unmerged: base weights + ``adapter/`` (PEFT layout);
* ``llama-lora.gguf``     the same run as an F32 GGUF (llama.cpp names, q/k rows permuted);
* ``qwen2-sft/``          SFT run (qwen2 fixture: q/k/v biases, tied embedding).

This script loads each HF directory with ``AutoModelForCausalLM.from_pretrained`` (no
missing, unexpected or mismatched weights allowed), the unmerged one through
``PeftModel.from_pretrained(base, DIR/adapter)``, and the GGUF with gguf-py's
``GGUFReader`` (tensors un-permuted into an HF state dict, loaded strictly into the merged
model's architecture). It runs the fixed token ids and writes the float32 logits, the
tokenization of a fixed text by ``AutoTokenizer`` and the cross-checks to
``crates/laconic-train/tests/fixtures/export/reference.json``. The Rust test re-creates the
same exports and asserts that laconic's logits equal these within 1e-4.

How to run (from the repository root)::

    python3 -m venv /work/pyenv            # any venv location works
    /work/pyenv/bin/pip install -r scripts/requirements-fixtures.txt peft==0.21.2
    /work/pyenv/bin/python scripts/check_export.py [--exports DIR] [--out PATH]

Without ``--exports`` the script makes the exports itself, by running (debug profile)::

    LACONIC_EXPORT_FIXTURE_DIR=<fresh temp dir> cargo test -p laconic-train --test export \\
        -- --exact exports_load_in_transformers_with_the_same_logits

``--exports DIR`` reads a directory made that way instead (it must also hold the
``settings.json`` the test writes). ``--out`` defaults to the committed reference path.

The committed reference.json was made with: Python 3.11, torch 2.15.0, transformers 5.24.0,
peft 0.21.2, gguf 0.19.0, safetensors 0.8.0, numpy 2.4.6 (recorded in the file under
``versions``). torch runs single-threaded, so the values are reproducible. llama.cpp itself is
not run here (llama-cpp-python is optional and not needed).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import gguf
from gguf import GGUFReader
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "crates" / "laconic-train" / "tests" / "fixtures" / "export" / "reference.json"
TEST_NAME = "exports_load_in_transformers_with_the_same_logits"

# A fixed text for the tokenizer check (both fixture tokenizers cover it).
TEXT = "What is 12 + 15? The robot said: 12 + 15 = 27.\nThen it went home."

# HF directories checked, with the key the Rust test reads.
HF_EXPORTS = ["llama-lora-merged", "qwen2-sft"]
PEFT_EXPORT = "llama-lora-peft"
GGUF_EXPORT = "llama-lora.gguf"

torch.set_num_threads(1)


def make_exports(cargo: str, out: Path) -> None:
    """Runs the Rust test with LACONIC_EXPORT_FIXTURE_DIR=out (an empty directory)."""
    env = dict(os.environ, LACONIC_EXPORT_FIXTURE_DIR=str(out))
    cmd = [cargo, "test", "-p", "laconic-train", "--test", "export", "--", "--exact", TEST_NAME]
    print("running:", " ".join(cmd), f"(LACONIC_EXPORT_FIXTURE_DIR={out})", file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def f32_list(a: np.ndarray) -> list:
    """Nested lists of the shortest decimals that read back as the same float32 values."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        return [float(str(x)) for x in a]
    return [f32_list(row) for row in a]


def load_hf(path: Path):
    """from_pretrained, refusing any missing, unexpected or mismatched weight."""
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, output_loading_info=True
    )
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), f"{path}: {kind} {info[kind]}"
    return model.eval()


@torch.no_grad()
def logits_of(model, ids: list[int]) -> np.ndarray:
    return model(torch.tensor([ids], dtype=torch.long)).logits[0].float().numpy()


def text_ids(path: Path) -> list[int]:
    tok = AutoTokenizer.from_pretrained(path)
    return tok.encode(TEXT, add_special_tokens=False)


# GGUF (llama.cpp) tensor names back to Hugging Face names.
GGUF_TO_HF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(name: str) -> str:
    top = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    if name in top:
        return top[name]
    _, layer, rest = name.split(".", 2)
    return f"model.layers.{layer}.{GGUF_TO_HF_LAYER[rest]}"


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's interleaved q/k row order back to HF's rotate-half order (per head, GGUF
    row 2*i + j holds HF row j*d/2 + i)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field(r: GGUFReader, key: str):
    return r.fields[key].contents()


def gguf_state(path: Path, config) -> tuple[dict[str, torch.Tensor], dict]:
    """The GGUF's tensors as an HF state dict, plus the metadata checked against config."""
    r = GGUFReader(str(path))
    arch = field(r, "general.architecture")
    assert arch == config.model_type, f"{path}: general.architecture {arch}"
    meta = {
        "block_count": config.num_hidden_layers,
        "context_length": config.max_position_embeddings,
        "embedding_length": config.hidden_size,
        "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.num_attention_heads,
        "attention.head_count_kv": config.num_key_value_heads,
    }
    for key, want in meta.items():
        got = field(r, f"{arch}.{key}")
        assert got == want, f"{path}: {arch}.{key} = {got}, config says {want}"
    eps = field(r, f"{arch}.attention.layer_norm_rms_epsilon")
    assert np.float32(eps) == np.float32(config.rms_norm_eps), f"{path}: rms eps {eps}"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == config.vocab_size, f"{path}: {len(tokens)} tokens"
    sd = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        arr = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        name = hf_name(t.name)
        if arch == "llama" and name.endswith("q_proj.weight"):
            arr = unpermute(arr, config.num_attention_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            arr = unpermute(arr, config.num_key_value_heads)
        sd[name] = torch.from_numpy(np.ascontiguousarray(arr))
    checked = {"architecture": arch, **meta, "tokens": len(tokens),
               "file_type": int(field(r, "general.file_type"))}
    return sd, checked


def dumps(v, indent: int = 0) -> str:
    """JSON with objects indented and each flat list (a logits row, token ids) on one line:
    diff-friendly at a fraction of the fully indented size."""
    pad = " " * (indent + 1)
    if isinstance(v, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps(x, indent + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(v, list) and v and all(isinstance(x, list) for x in v):
        rows = ",\n".join(pad + dumps(x, indent + 1) for x in v)
        return "[\n" + rows + "\n" + " " * indent + "]"
    return json.dumps(v, separators=(",", ":"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exports", type=Path, help="a directory the Rust test wrote (else it is run)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cargo", default="cargo")
    a = ap.parse_args()

    if a.exports is not None:
        check(a.exports, a.out)
        return
    with tempfile.TemporaryDirectory(prefix="laconic-exports-") as tmp:
        make_exports(a.cargo, Path(tmp))
        check(Path(tmp), a.out)


def check(root: Path, out: Path) -> None:
    """Loads the exports under root, checks them, writes the reference to out."""
    settings = json.loads((root / "settings.json").read_text())
    ids = [int(i) for i in settings["token_ids"]]

    logits: dict[str, list] = {}
    tok_ids: dict[str, list[int]] = {}
    checks: dict[str, object] = {}
    raw: dict[str, np.ndarray] = {}

    for key in HF_EXPORTS:
        m = load_hf(root / key)
        raw[key] = logits_of(m, ids)
        logits[key] = f32_list(raw[key])
        tok_ids[key] = text_ids(root / key)
        if m.config.tie_word_embeddings:
            assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr(), \
                f"{key}: lm_head is not tied to the embedding"
            checks[f"{key}_head_tied"] = True

    base = load_hf(root / PEFT_EXPORT)
    # The unmerged directory holds the untouched base model.
    checks["peft_base_vs_merged_max_abs_diff"] = float(
        np.abs(logits_of(base, ids) - raw["llama-lora-merged"]).max())
    with_adapter = PeftModel.from_pretrained(base, root / PEFT_EXPORT / "adapter").eval()
    raw[PEFT_EXPORT] = logits_of(with_adapter, ids)
    logits[PEFT_EXPORT] = f32_list(raw[PEFT_EXPORT])
    tok_ids[PEFT_EXPORT] = text_ids(root / PEFT_EXPORT)
    d = float(np.abs(raw[PEFT_EXPORT] - raw["llama-lora-merged"]).max())
    checks["peft_vs_merged_max_abs_diff"] = d
    assert d < 1e-4, f"base + PEFT adapter differs from the merged export by {d}"
    assert checks["peft_base_vs_merged_max_abs_diff"] > 1e-2, "the adapter changes nothing"

    merged = load_hf(root / "llama-lora-merged")
    sd, meta = gguf_state(root / GGUF_EXPORT, merged.config)
    missing, unexpected = merged.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, f"GGUF tensors: missing {missing}, unexpected {unexpected}"
    d = float(np.abs(logits_of(merged, ids) - raw["llama-lora-merged"]).max())
    checks["gguf_f32_vs_merged_max_abs_diff"] = d
    checks["gguf_metadata"] = meta
    assert d < 1e-5, f"the GGUF read by gguf-py differs from the merged export by {d}"

    reference = {
        "generator": "scripts/check_export.py",
        "versions": {"python": sys.version.split()[0]} | {
            p: importlib.metadata.version(p)
            for p in ("torch", "transformers", "peft", "gguf", "safetensors", "numpy", "tokenizers")
        },
        "settings": settings,
        "token_ids": ids,
        "text": TEXT,
        "text_ids": tok_ids,
        "checks": checks,
        "logits": logits,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(reference) + "\n"
    assert json.loads(text) == reference
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)
    for k, v in checks.items():
        print(f"  {k}: {v}", file=sys.stderr)


if __name__ == "__main__":
    main()
