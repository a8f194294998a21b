#!/usr/bin/env python3
"""PyTorch + transformers scoring throughput, the peer of `laconic label --scorer MODEL`.

Same work as laconic's model scorers on the same texts (the first `--limit` solutions of a
GSM8K file, each a trace whose reasoning is the solution before `####`):

- `--kind surprisal`: one forward pass over `question \\n` (with the tokenizer's special
  tokens, as laconic's `encode(.., true)`) followed by the reasoning's tokens (without), and
  `-log p(token | prefix)` of every reasoning token (laconic_label::surprisal).
- `--kind attention`: that pass without logits, filling the KV cache, then the answer line
  `\\n#### ANSWER` with attention weights on (eager attention), and per reasoning token the
  weight the answer line's non-whitespace tokens give it, averaged over heads, layers and
  those tokens, divided by the largest (laconic_label::attention).

Times the scoring of every trace (tokenizing included, model loading not) and prints one
JSON line: traces, reasoning tokens scored, tokens through the model, seconds, tokens/s.
With `--compare LABELED.jsonl` (a `laconic label` output of the same texts and kind), also
the largest and mean absolute difference of the per-token values laconic wrote.

How to run (from the repository root)::

    /work/pyenv/bin/python scripts/bench_score_torch.py \\
        --model checkpoints/SmolLM2-135M-Instruct.F32.gguf --data data/gsm8k/train.jsonl \\
        --limit 200 --kind surprisal --threads 2

`--model` is a Hugging Face directory or a GGUF file (transformers dequantizes a GGUF file
to float32 on load).
"""

import argparse
import json
import os
import time


def strip_calculator_annotations(text):
    """Removes every `<<...>>`, as laconic_traces::datasets does; an unclosed `<<` stays."""
    out = []
    while True:
        open_ = text.find("<<")
        close = text.find(">>", open_ + 2) if open_ >= 0 else -1
        if open_ < 0 or close < 0:
            break
        out.append(text[:open_])
        text = text[close + 2 :]
    out.append(text)
    return "".join(out)


def load_traces(path, limit):
    """(question, reasoning, answer) as laconic's GSM8K reader makes them."""
    traces = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            solution, _, answer = row["answer"].rpartition("####")
            reasoning = strip_calculator_annotations(solution).rstrip()
            traces.append((row["question"], reasoning, answer.strip()))
            if len(traces) == limit:
                break
    return traces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="data/gsm8k/train.jsonl")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--kind", choices=["surprisal", "attention"], default="surprisal")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--compare", help="a laconic labeled file of the same texts")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    kw = {"dtype": torch.float32}
    if args.kind == "attention":
        kw["attn_implementation"] = "eager"  # sdpa returns no weights
    if args.model.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(args.model))
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **kw)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, **kw)
        tok = AutoTokenizer.from_pretrained(args.model)
    model.eval()
    traces = load_traces(args.data, args.limit)

    results = []
    scored = 0
    through = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for question, reasoning, answer in traces:
            prefix = tok(question.rstrip() + "\n", add_special_tokens=True).input_ids
            ids = tok(reasoning, add_special_tokens=False).input_ids
            full = torch.tensor([prefix + ids])
            if args.kind == "surprisal":
                logits = model(input_ids=full).logits[0, :-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                picked = logp.gather(1, full[0, 1:, None])[:, 0]
                values = (-picked[len(prefix) - 1 :]).tolist()
                through += full.shape[1]
            else:
                out = model(input_ids=full, use_cache=True, logits_to_keep=1)
                suffix = tok("\n#### " + answer, add_special_tokens=False).input_ids
                queries = [i for i, t in enumerate(suffix) if tok.decode([t]).strip()]
                out2 = model(
                    input_ids=torch.tensor([suffix]),
                    past_key_values=out.past_key_values,
                    output_attentions=True,
                    logits_to_keep=1,
                )
                # Each layer: [1, heads, suffix, prefix + reasoning + suffix].
                w = torch.stack([a[0] for a in out2.attentions])
                w = w[:, :, queries, len(prefix) : len(prefix) + len(ids)]
                mean = w.double().mean(dim=(0, 1, 2))
                values = (mean / mean.max()).tolist()
                through += full.shape[1] + len(suffix)
            scored += len(ids)
            results.append(values)
    seconds = time.perf_counter() - start

    report = {
        "engine": f"pytorch {torch.__version__}",
        "kind": args.kind,
        "threads": torch.get_num_threads(),
        "traces": len(traces),
        "reasoning_tokens": scored,
        "model_tokens": through,
        "seconds": round(seconds, 3),
        "reasoning_tokens_per_s": round(scored / seconds, 1),
        "model_tokens_per_s": round(through / seconds, 1),
    }
    if args.compare:
        field = args.kind
        diffs = []
        skipped = 0
        with open(args.compare) as f:
            labeled = [json.loads(line) for line in f if line.strip()]
        for values, line in zip(results, labeled):
            theirs = line.get(field)
            if theirs is None or len(theirs) != len(values):
                skipped += 1
                continue
            diffs.extend(abs(a - b) for a, b in zip(values, theirs))
        report["compare"] = {
            "field": field,
            "tokens": len(diffs),
            "traces_skipped": skipped,
            "max_abs_diff": round(max(diffs), 4) if diffs else None,
            "mean_abs_diff": round(sum(diffs) / len(diffs), 5) if diffs else None,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
