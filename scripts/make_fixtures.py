#!/usr/bin/env python3
"""Generate the reference fixtures used by the laconic-infer Rust tests.

How to run (from the repository root)::

    python3 -m venv /work/pyenv            # any venv location works
    /work/pyenv/bin/pip install -r scripts/requirements-fixtures.txt
    /work/pyenv/bin/python scripts/make_fixtures.py [--smollm2 PATH] [--only PART ...]

``--smollm2`` (or the env var ``LACONIC_SMOLLM2_GGUF``) points at
``SmolLM2-135M-Instruct.Q4_1.gguf`` (sha256 b179c952...db53); the default is
``checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf``.  ``--only`` restricts the run
to some of ``tiny``, ``quant``, ``smollm2`` (default: all three).

Everything is written under ``crates/laconic-infer/tests/fixtures/``:

* ``{llama,llama3,qwen2,qwen3}/``: a tiny random-weight model per family, built
  with transformers' own classes, weights rescaled so that the next-token
  distributions are peaked.  Each directory is an HF model directory
  (``config.json``, ``model.safetensors``, ``tokenizer.json``,
  ``tokenizer_config.json`` with a ChatML chat template,
  ``generation_config.json``), plus ``model-{f32,q8_0,q4_0}.gguf`` written the
  way llama.cpp's convert_hf_to_gguf would, and ``reference.json`` with
  per-token log-probabilities, greedy continuations, a chat-template rendering
  and llama.cpp's own numbers for the GGUF files.
  Extra variants: ``llama/hf-bf16-sharded/`` (bf16, several safetensors shards
  + index) and ``qwen2/hf-f16/`` (float16).
* ``quant_blocks.json``: raw GGML blocks (hex) of F16, BF16, Q8_0, Q4_0, Q4_1,
  Q4_K, Q5_K, Q6_K and the float32 values gguf-py's dequantizer gives for them.
* ``smollm2/reference.json``: tokenization, per-token log-probabilities,
  perplexities and greedy ChatML continuations of the real SmolLM2-135M-Instruct
  Q4_1 GGUF, from transformers (GGUF dequantized to f32) and from llama.cpp.

All randomness comes from fixed seeds; torch runs single-threaded so that the
float32 reference values are reproducible.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import gguf
import gguf.quants
from gguf import GGMLQuantizationType as QT
import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "laconic-infer" / "tests" / "fixtures"
DEFAULT_SMOLLM2 = ROOT / "checkpoints" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"

torch.set_num_threads(1)

# ---------------------------------------------------------------------------
# Fixed texts
# ---------------------------------------------------------------------------

TRAIN_SENTENCES = """\
The quick brown fox jumps over the lazy dog.
A small robot lives in a quiet town by the sea.
Every morning the robot counts the boats in the harbor.
It writes the numbers in a little book and adds them up.
On Monday there were 12 boats, and on Tuesday there were 15 boats.
So the robot wrote: 12 + 15 = 27.
The baker sells bread, cakes and cookies to the people of the town.
She baked 48 cookies and sold half of them, so she has 24 cookies left.
The teacher asked the class: what is seven times eight?
The children answered that seven times eight is fifty-six.
Natalia sold clips to her friends in April, and then she sold half as many in May.
How many apples are left if you have 10 apples and eat 3 of them?
If a train travels 60 miles in one hour, how far does it travel in 3 hours?
The answer is 180 miles, because 60 * 3 = 180.
Water boils at 100 degrees and freezes at 0 degrees.
There are 365 days in a year and 24 hours in a day.
Please read the question carefully before you write the answer.
The assistant is helpful, honest and kind.
The user asks a question and the assistant gives an answer.
Once upon a time there was a king who loved numbers.
He had 3 sons and 2 daughters, so he had 5 children.
The river runs through the valley and into the sea.
We can add, subtract, multiply and divide numbers.
Twenty minus eight is twelve, and twelve divided by four is three.
The cafe on the corner opens at 8 and closes at 17.
It's a nice day, isn't it? They're going to the park, and we'll follow.
I'd like a cup of tea, and you've already had two.
"""

ARITH_OPS = ["+", "-", "*", "/"]

REFERENCE_TEXT = (
    "Once upon a time, a small robot said: 12 + 15 = 27.\n"
    "Then it asked the baker, \"What is 100 - 58?\"  "
    "She smiled: it's 42. The café was closed,\n\nso they went home."
)

GREEDY_PROMPTS = [
    "The robot said",
    "Once upon a time",
    "The answer is",
    "Question: what is 6 * 7?\nAnswer:",
    "The baker sold",
    "There are",
]
GREEDY_MAX_NEW = 24
NEAR_TIE = 1e-3
# a prompt is only accepted when every greedy step of every variant has a
# top-1/top-2 logit gap at least this large (comfortably above NEAR_TIE)
GREEDY_MIN_GAP = 1e-2

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 12 + 15?"},
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
BPE_VOCAB = 509  # at most 256 byte symbols + merges; the 3 special tokens come after

# Two pre-tokenizer styles.  "gpt2" (llama, llama3): the GPT-2 ByteLevel
# pre-tokenizer with its built-in regex.  "qwen2" (qwen2, qwen3): the regex of
# Qwen2's tokenizer.json followed by ByteLevel without regex -- transformers 5
# rebuilds the pre-tokenizer of any qwen2/qwen3 checkpoint this way when
# loading it (Qwen2Tokenizer), so a GPT-2 style tokenizer.json would not be
# honoured there.  The BPE merges are trained separately for each style.
QWEN2_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# llama.cpp's tokenizer.ggml.pre names whose regexes match the two styles
GGUF_TOKENIZER_PRE = {"gpt2": "gpt-2", "qwen2": "qwen2"}

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def log(*a):
    print(*a, flush=True)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def token_logprobs(logits: np.ndarray, ids: list[int]) -> list:
    """Per-token log-probabilities (first entry None) from [n, vocab] logits."""
    lp = log_softmax64(logits)
    return [None] + [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))]


def max_abs_diff(a: list, b: list) -> float:
    return max(abs(x - y) for x, y in zip(a[1:], b[1:]))


def mean_abs_diff(a: list, b: list) -> float:
    return float(np.mean([abs(x - y) for x, y in zip(a[1:], b[1:])]))


def perplexity(lps: list) -> float:
    v = [x for x in lps if x is not None]
    return float(math.exp(-sum(v) / len(v)))


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def training_corpus() -> list[str]:
    rng = random.Random(1234)
    lines = TRAIN_SENTENCES.splitlines()
    for _ in range(150):
        a, b = rng.randint(0, 120), rng.randint(1, 60)
        op = rng.choice(ARITH_OPS)
        r = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        lines.append(f"{a} {op} {b} = {r}")
    return lines


def build_tokenizer(style: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif style == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(tokenizers.Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        raise ValueError(style)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    # the gpt2 style reaches BPE_VOCAB; with the qwen2 regex (digits split one
    # by one) the corpus runs out of pairs seen twice a little earlier
    assert 384 <= tok.get_vocab_size() <= BPE_VOCAB, tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def make_hf_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    hf = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tok.to_str()),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=None,
        pad_token=None,
        chat_template=CHAT_TEMPLATE,
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    return hf


def save_tokenizer(hf_tok, tok: Tokenizer, out: Path) -> None:
    hf_tok.save_pretrained(out)
    # transformers 5 rewrites the post-processor as an (empty) TemplateProcessing;
    # store the tokenizer exactly as the `tokenizers` library built it instead
    # (GPT-2 style ByteLevel post-processor).
    tok.save(str(out / "tokenizer.json"))
    # Keep the chat template inside tokenizer_config.json (the classic layout
    # used by SmolLM2/Qwen checkpoints) even if this transformers version
    # prefers a separate chat_template.jinja.
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = CHAT_TEMPLATE
    tc["bos_token"] = BOS_TOKEN
    tc["eos_token"] = EOS_TOKEN
    tc["add_bos_token"] = False
    tc["add_eos_token"] = False
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc.pop("backend", None)
    write_json(tc_path, tc)
    jinja = out / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


# ---------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------

FAMILIES = {
    "llama": dict(
        tokenizer="gpt2",
        cls=LlamaForCausalLM, cfg_cls=LlamaConfig, arch="llama", seed=101,
        rope={"rope_type": "default", "rope_theta": 30000.0},
        eps=1e-5, tied=False, head_dim=16, config_style="classic",
    ),
    "llama3": dict(
        tokenizer="gpt2",
        cls=LlamaForCausalLM, cfg_cls=LlamaConfig, arch="llama", seed=202,
        rope={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64},
        eps=1e-5, tied=False, head_dim=16, config_style="classic",
    ),
    "qwen2": dict(
        tokenizer="qwen2",
        cls=Qwen2ForCausalLM, cfg_cls=Qwen2Config, arch="qwen2", seed=303,
        rope={"rope_type": "default", "rope_theta": 1000000.0},
        eps=1e-6, tied=True, head_dim=16, config_style="classic",
    ),
    "qwen3": dict(
        tokenizer="qwen2",
        cls=Qwen3ForCausalLM, cfg_cls=Qwen3Config, arch="qwen3", seed=404,
        rope={"rope_type": "default", "rope_theta": 1000000.0},
        eps=1e-6, tied=False, head_dim=32, config_style="new",
    ),
}

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, MAX_POS = 64, 128, 2, 4, 2, 256

# weight rescaling (see rescale_weights); tuned so that mean top-1 prob on the
# reference text is > 0.5 without every distribution being one-hot
PROJ_GAIN = 1.5
LM_HEAD_GAIN = 5.0
BIAS_STD = 0.3
EMB_STD = 1.0
TIED_EMB_STD = 0.6


def make_config(fam: str, vocab: int, bos: int, eos: int):
    f = FAMILIES[fam]
    kw = dict(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTER,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=MAX_POS, rms_norm_eps=f["eps"],
        rope_parameters=dict(f["rope"]), tie_word_embeddings=f["tied"],
        head_dim=f["head_dim"], bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
        hidden_act="silu",
    )
    if fam in ("qwen2", "qwen3"):
        kw.update(use_sliding_window=False, sliding_window=None)
    if fam == "qwen3":
        kw.update(attention_bias=False)
    return f["cfg_cls"](**kw)


def rescale_weights(model, fam: str) -> None:
    """Replace the 0.02-std init by larger random weights so outputs are peaked."""
    g = torch.Generator().manual_seed(FAMILIES[fam]["seed"] * 7 + 1)
    tied = FAMILIES[fam]["tied"]
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("embed_tokens.weight"):
                std = TIED_EMB_STD if tied else EMB_STD
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif "norm" in name:  # RMSNorm weights incl. qwen3 q_norm/k_norm
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * BIAS_STD)
            elif name == "lm_head.weight":
                fan_in = p.shape[1]
                p.copy_(torch.randn(p.shape, generator=g) * (LM_HEAD_GAIN / math.sqrt(fan_in)))
            elif name.endswith(".weight") and p.dim() == 2:
                fan_in = p.shape[1]
                p.copy_(torch.randn(p.shape, generator=g) * (PROJ_GAIN / math.sqrt(fan_in)))
            else:
                raise RuntimeError(f"unexpected parameter {name}")


@torch.no_grad()
def logits_of(model, ids: list[int]) -> np.ndarray:
    out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].float().numpy()


@torch.no_grad()
def greedy(model, prompt_ids: list[int], n: int, eos: int) -> tuple[list[int], float]:
    """Greedy decoding without KV cache; returns (new ids, smallest top1-top2 gap)."""
    ids = list(prompt_ids)
    new: list[int] = []
    min_gap = float("inf")
    for _ in range(n):
        last = logits_of(model, ids)[-1].astype(np.float64)
        top2 = np.sort(last)[-2:]
        min_gap = min(min_gap, float(top2[1] - top2[0]))
        nxt = int(np.argmax(last))
        new.append(nxt)
        ids.append(nxt)
        if nxt == eos:
            break
    return new, min_gap


def mean_top1(logits: np.ndarray) -> float:
    lp = log_softmax64(logits)
    return float(np.exp(lp.max(axis=-1)).mean())


def to_classic_config(path: Path, keep_head_dim: bool) -> None:
    """Rewrite a transformers-5 config.json in the classic (<= 4.x) key style."""
    cfg = json.loads(path.read_text())
    rp = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rp.pop("rope_theta")
    cfg["rope_scaling"] = None if rp.get("rope_type", "default") == "default" else rp
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    # older Llama-2 / Qwen2 style configs have no head_dim (it defaults to
    # hidden_size / num_attention_heads); llama3 keeps it like Llama-3.2's
    default_hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    if not keep_head_dim and cfg.get("head_dim") == default_hd:
        del cfg["head_dim"]
    write_json(path, dict(sorted(cfg.items())))


def save_hf_dir(model, hf_tok, tok: Tokenizer, out: Path, style: str,
                gen_cfg: GenerationConfig, **save_kw) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, **save_kw)
    gen_cfg.save_pretrained(out)
    save_tokenizer(hf_tok, tok, out)
    for p in out.iterdir():
        p.chmod(0o644)
    cfg = json.loads((out / "config.json").read_text())
    assert "rope_parameters" in cfg and "dtype" in cfg, (
        "this transformers version no longer writes the new config style", sorted(cfg))
    if style == "classic":
        to_classic_config(out / "config.json", keep_head_dim=model.config.model_type == "llama"
                          and model.config.rope_parameters.get("rope_type") == "llama3")


def check_reload(out: Path, ref_model, ids: list[int]) -> None:
    """The saved dir must load back (config style included) to the same model."""
    t = AutoTokenizer.from_pretrained(out)
    assert t.encode(REFERENCE_TEXT, add_special_tokens=False) == ids
    assert t.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True) == (
        "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in CHAT_MESSAGES)
        + "<|im_start|>assistant\n")
    assert t.bos_token == BOS_TOKEN and t.eos_token == EOS_TOKEN
    m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert dict(m.config.rope_parameters) == dict(ref_model.config.rope_parameters), (
        m.config.rope_parameters, ref_model.config.rope_parameters)
    a, b = logits_of(m, ids), logits_of(ref_model, ids)
    assert np.array_equal(a, b), f"{out}: reloaded model differs, max {np.abs(a - b).max()}"


# ---------------------------------------------------------------------------
# GGUF writing (llama.cpp convert_hf_to_gguf conventions)
# ---------------------------------------------------------------------------


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> llama.cpp interleaved-pair order (llama arch only).

    Within each head of size d, GGUF row 2*i + j holds HF row j*d/2 + i.
    """
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """Per-frequency divisors for llama3 rope scaling (rope_freqs.weight)."""
    base = rope["rope_theta"]
    freqs = (1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))).astype(np.float32)
    factor = rope["factor"]
    lo, hi = rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    low_wl, high_wl = old / lo, old / hi
    out = []
    for fr in freqs:
        wl = 2 * math.pi / float(fr)
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


HF_TO_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def hf_to_gguf_name(name: str) -> str:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")
    assert parts[0] == "model" and parts[1] == "layers", name
    return f"blk.{parts[2]}.{HF_TO_GGUF_LAYER['.'.join(parts[3:])]}"


def gguf_to_hf_name(name: str) -> str:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    inv = {v: k for k, v in HF_TO_GGUF_LAYER.items()}
    _, i, rest = name.split(".", 2)
    return f"model.layers.{i}.{inv[rest]}"


FILE_TYPES = {
    "f32": (QT.F32, gguf.LlamaFileType.ALL_F32),
    "q8_0": (QT.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}


def tokenizer_for_gguf(tok: Tokenizer):
    spec = json.loads(tok.to_str())
    vocab = tok.get_vocab(with_added_tokens=True)
    n = len(vocab)
    tokens = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens)
    special = {a["content"] for a in spec["added_tokens"] if a["special"]}
    types = [int(gguf.TokenType.CONTROL) if t in special else int(gguf.TokenType.NORMAL)
             for t in tokens]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in spec["model"]["merges"]]
    return tokens, types, merges


def write_gguf(path: Path, fam: str, model, tok: Tokenizer, ftype: str) -> None:
    f = FAMILIES[fam]
    arch = f["arch"]
    cfg = model.config
    qtype, file_type = FILE_TYPES[ftype]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"laconic-tiny-{fam}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    if cfg.head_dim != cfg.hidden_size // cfg.num_attention_heads:
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
    if arch == "llama":  # LlamaModel.set_gguf_parameters adds these two
        w.add_vocab_size(cfg.vocab_size)
        w.add_rope_dimension_count(cfg.head_dim)
    w.add_file_type(int(file_type))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, types, merges = tokenizer_for_gguf(tok)
    vocab = tok.get_vocab(with_added_tokens=True)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(GGUF_TOKENIZER_PRE[f["tokenizer"]])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab[BOS_TOKEN])
    w.add_eos_token_id(vocab[EOS_TOKEN])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    if arch == "llama" and cfg.rope_parameters.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(dict(cfg.rope_parameters), cfg.head_dim))

    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = t.detach().float().numpy().copy()
        if arch == "llama":
            if name.endswith("q_proj.weight"):
                data = permute_qk(data, cfg.num_attention_heads)
            elif name.endswith("k_proj.weight"):
                data = permute_qk(data, cfg.num_key_value_heads)
        gname = hf_to_gguf_name(name)
        if data.ndim == 2 and qtype != QT.F32:
            w.add_tensor(gname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gname, data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def state_from_gguf(path: Path, fam: str, cfg) -> dict[str, torch.Tensor]:
    """HF state dict holding exactly the (dequantized) values stored in a GGUF."""
    r = gguf.GGUFReader(str(path))
    sd = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        arr = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        name = gguf_to_hf_name(t.name)
        if FAMILIES[fam]["arch"] == "llama":
            if name.endswith("q_proj.weight"):
                arr = unpermute_qk(arr, cfg.num_attention_heads)
            elif name.endswith("k_proj.weight"):
                arr = unpermute_qk(arr, cfg.num_key_value_heads)
        sd[name] = torch.from_numpy(np.ascontiguousarray(arr))
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in sd
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


def rounded_copy(fam: str, model, dtype) -> torch.nn.Module:
    """f32 model whose weights are rounded through `dtype` (buffers such as the
    rotary inv_freq are left alone, as they are when loading from disk)."""
    sd = {k: v.to(dtype).float() for k, v in model.state_dict().items()}
    return model_with_state(fam, model.config, sd)


def model_with_state(fam: str, cfg, sd) -> torch.nn.Module:
    m = FAMILIES[fam]["cls"](copy.deepcopy(cfg)).float().eval()
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k == "lm_head.weight" for k in missing), missing
    return m


# ---------------------------------------------------------------------------
# llama.cpp helpers
# ---------------------------------------------------------------------------


def llama_cpp_module():
    import llama_cpp  # imported lazily: only needed for validation
    return llama_cpp


# llama.cpp defaults keep the KV cache in f16 (and may use flash attention);
# with the peaked tiny models that alone moves log-probs by ~1e-2.  The
# "precise" settings (f32 KV cache, no flash attention) isolate the file
# format / convention check: f32 GGUFs then agree with transformers to ~1e-4.
LLAMA_CPP_PRECISE = {"type_k": 0, "type_v": 0, "flash_attn": False}  # 0 = GGML_TYPE_F32
LLAMA_CPP_SETTINGS = "n_threads=2, n_ctx=256, logits_all=True, type_k=type_v=F32, flash_attn=False"


def llama_cpp_open(path: Path, precise: bool = True):
    Llama = llama_cpp_module().Llama
    extra = LLAMA_CPP_PRECISE if precise else {}
    return Llama(model_path=str(path), logits_all=True, n_threads=2, n_ctx=256, verbose=False,
                 **extra)


def llama_cpp_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llama_cpp_greedy(llm, prompt_ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


# ---------------------------------------------------------------------------
# Part A + B: tiny families
# ---------------------------------------------------------------------------


def verify_llama3_scaling(cfg) -> list[float]:
    """Show that llama3 scaling changes some (not all) frequencies here."""
    rope = dict(cfg.rope_parameters)
    fac = llama3_rope_factors(rope, cfg.head_dim)
    assert np.any(fac == 1.0) and np.any(fac == rope["factor"]) and np.any(
        (fac > 1.0) & (fac < rope["factor"])), fac
    # cross-check with transformers' own inv_freq computation
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    inv_scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    base = rope["rope_theta"]
    d = cfg.head_dim
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    hf_fac = (inv / inv_scaled).numpy()
    assert np.allclose(hf_fac, fac, rtol=1e-5), (hf_fac, fac)
    return [float(x) for x in fac]


def build_family(fam: str, tok: Tokenizer, hf_tok, ref_ids: list[int], stats: dict) -> None:
    f = FAMILIES[fam]
    out = FIXTURES / fam
    vocab = tok.get_vocab(with_added_tokens=True)
    bos, eos = vocab[BOS_TOKEN], vocab[EOS_TOKEN]
    torch.manual_seed(f["seed"])
    cfg = make_config(fam, tok.get_vocab_size(with_added_tokens=True), bos, eos)
    model = f["cls"](cfg).float().eval()
    rescale_weights(model, fam)
    if f["tied"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    fam_stats: dict = {}
    if fam == "llama3":
        fam_stats["rope_freqs"] = verify_llama3_scaling(cfg)
        log(f"[{fam}] llama3 rope factors: {fam_stats['rope_freqs']}")

    gen_cfg = GenerationConfig(bos_token_id=bos, eos_token_id=eos, do_sample=False)
    save_hf_dir(model, hf_tok, tok, out, f["config_style"], gen_cfg)
    check_reload(out, model, ref_ids)
    for stale in out.glob("*.gguf"):
        stale.unlink()

    logits = logits_of(model, ref_ids)
    lp_hf = token_logprobs(logits, ref_ids)
    top1 = mean_top1(logits)
    log(f"[{fam}] mean top-1 prob {top1:.4f}; mean token logprob "
        f"{np.mean(lp_hf[1:]):.3f}; min {np.min(lp_hf[1:]):.3f} max {np.max(lp_hf[1:]):.4f}")
    assert 0.5 < top1 < 0.97, top1
    logprobs = {"hf": lp_hf}
    ref_models = {"hf": model}

    if fam == "llama":
        sub = out / "hf-bf16-sharded"
        save_hf_dir(copy.deepcopy(model).to(torch.bfloat16), hf_tok, tok, sub, "classic",
                    gen_cfg, max_shard_size="100KB")
        shards = sorted(sub.glob("model-*.safetensors"))
        assert len(shards) >= 2 and (sub / "model.safetensors.index.json").exists(), shards
        m = AutoModelForCausalLM.from_pretrained(sub, dtype=torch.float32).eval()
        rounded = rounded_copy(fam, model, torch.bfloat16)
        assert np.array_equal(logits_of(m, ref_ids), logits_of(rounded, ref_ids))
        logprobs["hf-bf16-sharded"] = token_logprobs(logits_of(m, ref_ids), ref_ids)
    if fam == "qwen2":
        sub = out / "hf-f16"
        save_hf_dir(copy.deepcopy(model).to(torch.float16), hf_tok, tok, sub, "classic", gen_cfg)
        m = AutoModelForCausalLM.from_pretrained(sub, dtype=torch.float32).eval()
        rounded = rounded_copy(fam, model, torch.float16)
        assert np.array_equal(logits_of(m, ref_ids), logits_of(rounded, ref_ids))
        logprobs["hf-f16"] = token_logprobs(logits_of(m, ref_ids), ref_ids)

    llama_cpp = {"settings": LLAMA_CPP_SETTINGS}
    diffs, means = {}, {}
    for ft in FILE_TYPES:
        gpath = out / f"model-{ft}.gguf"
        write_gguf(gpath, fam, model, tok, ft)
        sd = state_from_gguf(gpath, fam, cfg)
        m = model_with_state(fam, cfg, sd)
        lg = logits_of(m, ref_ids)
        if ft == "f32":
            assert np.array_equal(lg, logits), "f32 gguf round trip is not exact"
        logprobs[f"gguf-{ft}"] = token_logprobs(lg, ref_ids)
        ref_models[f"gguf-{ft}"] = m
        diffs[f"gguf-{ft} vs hf"] = max_abs_diff(logprobs[f"gguf-{ft}"], lp_hf)

        llm = llama_cpp_open(gpath)
        cpp_ids = llm.tokenize(REFERENCE_TEXT.encode("utf-8"), add_bos=False, special=False)
        assert cpp_ids == ref_ids, f"llama.cpp tokenization differs for {gpath}"
        llama_cpp["token_ids"] = cpp_ids
        rendered = hf_tok.apply_chat_template(CHAT_MESSAGES, tokenize=False,
                                              add_generation_prompt=True)
        assert llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True) == \
            hf_tok.encode(rendered, add_special_tokens=False), "chat tokenization differs"
        lp_cpp = token_logprobs(llama_cpp_logits(llm, ref_ids), ref_ids)
        llama_cpp[f"gguf-{ft}"] = lp_cpp
        d = max_abs_diff(lp_cpp, logprobs[f"gguf-{ft}"])
        diffs[f"llama.cpp gguf-{ft} vs reference"] = d
        means[f"llama.cpp gguf-{ft} vs reference"] = mean_abs_diff(lp_cpp, logprobs[f"gguf-{ft}"])
        means[f"llama.cpp gguf-{ft} vs hf"] = mean_abs_diff(lp_cpp, lp_hf)
        means[f"gguf-{ft} vs hf"] = mean_abs_diff(logprobs[f"gguf-{ft}"], lp_hf)
        llm.close()
        # the same with llama.cpp's default settings (f16 KV cache), informational
        llm = llama_cpp_open(gpath, precise=False)
        d_def = max_abs_diff(token_logprobs(llama_cpp_logits(llm, ref_ids), ref_ids),
                             logprobs[f"gguf-{ft}"])
        diffs[f"llama.cpp (default settings) gguf-{ft} vs reference"] = d_def
        llm.close()
        log(f"[{fam}] {gpath.name}: llama.cpp vs reference max |dlogprob| = {d:.3e} "
            f"(default settings {d_def:.3e}); reference vs f32 = {diffs[f'gguf-{ft} vs hf']:.3e}")
        if ft == "f32":
            assert d < 1e-3, d
        else:
            # llama.cpp multiplies quantized weights with activations quantized
            # to Q8 -- the main source of the gap above.  An F32 GGUF holding
            # the dequantized weights must agree with the reference closely.
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                p32 = Path(tmp) / "deq.gguf"
                write_gguf(p32, fam, m, tok, "f32")
                llm = llama_cpp_open(p32)
                d32 = max_abs_diff(token_logprobs(llama_cpp_logits(llm, ref_ids), ref_ids),
                                   logprobs[f"gguf-{ft}"])
                llm.close()
            diffs[f"llama.cpp on an F32 copy of gguf-{ft} vs reference"] = d32
            log(f"[{fam}] llama.cpp on an F32 copy of the dequantized {ft} weights: {d32:.3e}")
            assert d32 < 1e-3, d32

    # greedy continuations
    greedy_out = None
    for prompt in GREEDY_PROMPTS:
        p_ids = hf_tok.encode(prompt, add_special_tokens=False)
        res, gaps = {}, {}
        for key in ("hf", "gguf-q8_0", "gguf-q4_0"):
            res[key], gaps[key] = greedy(ref_models[key], p_ids, GREEDY_MAX_NEW, eos)
        if min(gaps.values()) >= GREEDY_MIN_GAP:
            greedy_out = {"prompt": prompt, "prompt_ids": p_ids, "max_new_tokens": GREEDY_MAX_NEW,
                          **res, "min_top2_logit_gap": gaps}
            break
        log(f"[{fam}] greedy prompt {prompt!r} rejected: near tie {gaps}")
    assert greedy_out is not None, "no greedy prompt without near-ties"
    log(f"[{fam}] greedy prompt {greedy_out['prompt']!r}, min gaps {greedy_out['min_top2_logit_gap']}")

    rendered = hf_tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    expect = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in CHAT_MESSAGES)
    assert rendered == expect + "<|im_start|>assistant\n", rendered

    ref = {
        "text": REFERENCE_TEXT,
        "token_ids": ref_ids,
        "logprobs": logprobs,
        "llama_cpp": llama_cpp,
        "greedy": greedy_out,
        "chat": {"messages": CHAT_MESSAGES, "rendered": rendered,
                 "rendered_ids": hf_tok.encode(rendered, add_special_tokens=False)},
        "stats": {"mean_top1_prob": top1, "max_abs_logprob_diff": diffs,
                  "mean_abs_logprob_diff": means, **fam_stats},
        "config_style": f["config_style"],
        "tokenizer_style": f["tokenizer"],
        "gguf": {"arch": f["arch"], "tokenizer_pre": GGUF_TOKENIZER_PRE[f["tokenizer"]],
                 "qk_permuted": f["arch"] == "llama",
                 "quantized_types": {"q8_0": "Q8_0", "q4_0": "Q4_0"},
                 "f32_tensors_in_quantized_files": "1-D tensors (norms, biases, rope_freqs)"},
    }
    write_json(out / "reference.json", ref)
    stats[fam] = {"mean_top1_prob": top1, "max": diffs, "mean": means}


def run_tiny(stats: dict) -> None:
    toks = {}
    for style in ("gpt2", "qwen2"):
        tok = build_tokenizer(style)
        hf_tok = make_hf_tokenizer(tok)
        ref_ids = hf_tok.encode(REFERENCE_TEXT, add_special_tokens=False)
        assert ref_ids == tok.encode(REFERENCE_TEXT).ids
        assert hf_tok.decode(ref_ids) == REFERENCE_TEXT
        log(f"tokenizer {style}: vocab {len(hf_tok)}, reference text {len(ref_ids)} tokens, "
            f"sha256(tokenizer.json) {hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]}")
        assert 60 <= len(ref_ids) <= 110, len(ref_ids)
        toks[style] = (tok, hf_tok, ref_ids)
    for fam in FAMILIES:
        build_family(fam, *toks[FAMILIES[fam]["tokenizer"]], stats)


# ---------------------------------------------------------------------------
# Part C: quantization blocks
# ---------------------------------------------------------------------------

QUANT_TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]
# byte offsets of the f16 scale fields inside one block, for types whose
# quantizer gguf-py does not implement (blocks are then random bytes)
F16_FIELDS = {"Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def run_quant() -> None:
    rng = np.random.default_rng(777)
    entries = []
    for name in QUANT_TYPES:
        qt = QT[name]
        block, tsize = gguf.GGML_QUANT_SIZES[qt]
        n_blocks = 4 if block > 1 else 32
        if name in F16_FIELDS:
            raw = rng.integers(0, 256, size=(n_blocks, tsize), dtype=np.uint8)
            for off in F16_FIELDS[name]:
                scales = (rng.standard_normal(n_blocks) * 0.02).astype(np.float16)
                raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
            source = "random bytes with finite f16 scale fields (gguf-py has no quantizer)"
            vals = None
        else:
            n = n_blocks * block
            vals = (rng.standard_normal(n) * rng.uniform(0.1, 3.0)).astype(np.float32)
            if name in ("F16", "BF16"):  # a few edge values
                vals[:6] = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 1e-6], dtype=np.float32)
            if name in ("Q8_0", "Q4_0", "Q4_1"):
                vals[:block] = 0.0  # an all-zero block (scale 0)
            raw = np.ascontiguousarray(gguf.quants.quantize(vals.reshape(1, n), qt)).view(np.uint8)
            source = "gguf.quants.quantize of random float32"
        raw = np.ascontiguousarray(raw).reshape(-1)
        assert raw.size == n_blocks * tsize
        deq = gguf.quants.dequantize(raw.reshape(1, -1), qt).reshape(-1).astype(np.float32)
        assert deq.size == n_blocks * block and np.all(np.isfinite(deq)), name
        e = {
            "type": name,
            "ggml_type": int(qt),
            "block_size": block,
            "type_size": tsize,
            "n_blocks": n_blocks,
            "source": source,
            "bytes_hex": raw.tobytes().hex(),
            "dequantized": [float(x) for x in deq],
        }
        if vals is not None:
            e["input"] = [float(x) for x in vals]
        entries.append(e)
        log(f"quant {name}: {n_blocks} blocks, {raw.size} bytes")
    write_json(FIXTURES / "quant_blocks.json", {
        "generator": "scripts/make_fixtures.py",
        "gguf_py_version": gguf_version(),
        "layout": "bytes_hex is n_blocks*type_size bytes, little endian, as stored in a GGUF "
                  "tensor; dequantized are the float32 values of gguf.quants.dequantize",
        "types": entries,
    })


# ---------------------------------------------------------------------------
# Part D: SmolLM2-135M-Instruct Q4_1
# ---------------------------------------------------------------------------


def gguf_version() -> str:
    from importlib.metadata import version
    return version("gguf")


def versions() -> dict:
    from importlib.metadata import version
    v = {"python": sys.version.split()[0]}
    for p in ("torch", "transformers", "tokenizers", "gguf", "numpy", "safetensors",
              "llama_cpp_python"):
        try:
            v[p] = version(p)
        except Exception:  # pragma: no cover - informational only
            v[p] = None
    return v


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def smollm2_f32_check(path: Path, ids: list[int], lp_ref: list) -> float:
    """Max |dlogprob| of llama.cpp on an F32 copy of the dequantized GGUF vs lp_ref."""
    import tempfile
    r = gguf.GGUFReader(str(path))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "f32.gguf"
        w = gguf.GGUFWriter(str(out), r.fields["general.architecture"].contents())
        for k, f in r.fields.items():
            if k.startswith("GGUF.") or k == "general.architecture":
                continue
            v = int(gguf.LlamaFileType.ALL_F32) if k == "general.file_type" else f.contents()
            sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(k, v, f.types[0], sub_type=sub)
        for t in r.tensors:
            w.add_tensor(t.name, gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
                         .astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        del r
        llm = llama_cpp_open(out)
        lp = token_logprobs(llama_cpp_logits(llm, ids), ids)
        llm.close()
    return max_abs_diff(lp, lp_ref)


def run_smollm2(path: Path) -> dict:
    if not path.exists():
        raise SystemExit(f"SmolLM2 GGUF not found at {path} (use --smollm2 or LACONIC_SMOLLM2_GGUF)")
    digest = sha256_file(path)
    assert digest == SMOLLM2_SHA256, f"unexpected sha256 {digest}"
    first = json.loads(GSM8K_TRAIN.read_text().splitlines()[0])
    text = first["question"] + "\n" + first["answer"]

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    llm = llama_cpp_open(path)

    ids_tf = tok.encode(text, add_special_tokens=False)
    ids_cpp = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert ids_tf == ids_cpp, "transformers and llama.cpp tokenize differently"
    lp_tf = token_logprobs(logits_of(model, ids_tf), ids_tf)
    lp_cpp = token_logprobs(llama_cpp_logits(llm, ids_cpp), ids_cpp)
    d = max_abs_diff(lp_tf, lp_cpp)
    ppl_tf, ppl_cpp = perplexity(lp_tf), perplexity(lp_cpp)
    log(f"[smollm2] {len(ids_tf)} tokens, max |dlogprob| transformers vs llama.cpp = {d:.4f} "
        f"(mean {mean_abs_diff(lp_tf, lp_cpp):.4f}), ppl transformers {ppl_tf:.4f}, "
        f"llama.cpp {ppl_cpp:.4f}")
    llm_def = llama_cpp_open(path, precise=False)
    ppl_cpp_def = perplexity(token_logprobs(llama_cpp_logits(llm_def, ids_cpp), ids_cpp))
    llm_def.close()
    # llama.cpp multiplies Q4_1/Q8_0 weights with activations quantized to
    # Q8_1/Q8_0, transformers with f32 activations.  Re-running llama.cpp on an
    # all-F32 copy of the same (dequantized) weights shows that this explains
    # the whole gap.
    d_f32 = smollm2_f32_check(path, ids_cpp, lp_tf)
    log(f"[smollm2] llama.cpp on the F32-dequantized copy vs transformers: {d_f32:.2e}; "
        f"llama.cpp default-settings ppl {ppl_cpp_def:.4f}")

    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    p_cpp = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    p_tf = tok.encode(prompt, add_special_tokens=False)
    assert p_cpp == p_tf, (p_cpp, p_tf)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    g_tf, gap = greedy(model, p_tf, 16, eos=-1)
    g_cpp = llama_cpp_greedy(llm, p_cpp, 16)
    log(f"[smollm2] greedy transformers {tok.decode(g_tf)!r} / llama.cpp {tok.decode(g_cpp)!r}, "
        f"min top-2 gap {gap:.4f}")

    r = gguf.GGUFReader(str(path))
    gguf_template = r.fields["tokenizer.chat_template"].contents()
    template = tok.chat_template
    if template is None:  # fall back to the template stored in the GGUF
        template = gguf_template
    assert template == gguf_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                       chat_template=template)

    ref = {
        "model_file": path.name,
        "model_sha256": digest,
        "text": text,
        "text_source": "GSM8K train.jsonl line 1: question + \"\\n\" + answer",
        "token_ids": ids_cpp,
        "token_ids_llama_cpp": ids_cpp,
        "token_ids_transformers": ids_tf,
        "logprobs_transformers": lp_tf,
        "logprobs_llama_cpp": lp_cpp,
        "perplexity_transformers": ppl_tf,
        "perplexity_llama_cpp": ppl_cpp,
        "perplexity_definition": "exp(mean of -logprob over tokens 2..n), i.e. every token "
                                 "after the first, no BOS",
        "max_abs_logprob_diff_transformers_vs_llama_cpp": d,
        "mean_abs_logprob_diff_transformers_vs_llama_cpp": mean_abs_diff(lp_tf, lp_cpp),
        "llama_cpp_settings": LLAMA_CPP_SETTINGS,
        "perplexity_llama_cpp_default_settings": ppl_cpp_def,
        "max_abs_logprob_diff_llama_cpp_on_f32_dequantized_copy_vs_transformers": d_f32,
        "chatml": {
            "prompt": prompt,
            "prompt_ids": p_cpp,
            "max_new_tokens": 16,
            "greedy_transformers_ids": g_tf,
            "greedy_transformers_text": tok.decode(g_tf),
            "greedy_llama_cpp_ids": g_cpp,
            "greedy_llama_cpp_text": tok.decode(g_cpp),
            "min_top2_logit_gap_transformers": gap,
        },
        "chat_template": {
            "messages": messages,
            "add_generation_prompt": True,
            "rendered": rendered,
            "rendered_ids": tok.encode(rendered, add_special_tokens=False),
            "template": template,
        },
        "versions": versions(),
    }
    write_json(FIXTURES / "smollm2" / "reference.json", ref)
    return {"max_abs_logprob_diff": d, "ppl_transformers": ppl_tf, "ppl_llama_cpp": ppl_cpp,
            "ppl_llama_cpp_default_settings": ppl_cpp_def, "f32_copy_max_abs_diff": d_f32}


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smollm2", type=Path,
                    default=Path(os.environ.get("LACONIC_SMOLLM2_GGUF", DEFAULT_SMOLLM2)))
    ap.add_argument("--only", nargs="+", choices=["tiny", "quant", "smollm2"],
                    default=["tiny", "quant", "smollm2"])
    args = ap.parse_args()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    log("versions:", json.dumps(versions()))
    stats: dict = {}
    if "tiny" in args.only:
        run_tiny(stats)
    if "quant" in args.only:
        run_quant()
    if "smollm2" in args.only:
        stats["smollm2"] = run_smollm2(args.smollm2)
    log(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
