#!/usr/bin/env python3
"""PyTorch + transformers (+ peft) training throughput, the peer of `laconic bench-train`.

Same work as laconic's benchmark: random token ids of shape [batch, seq_len], causal-LM loss
on every position, backward, AdamW step; `warmup` untimed steps, then `steps` timed ones.
Prints one JSON line like `laconic bench-train` does.

How to run (from the repository root; packages in scripts/requirements-fixtures.txt)::

    /work/pyenv/bin/python scripts/bench_train_torch.py \
        --model checkpoints/SmolLM2-135M-Instruct.F32.gguf --method lora --batch 4 --seq-len 256

`--model` is a Hugging Face directory or a GGUF file (transformers dequantizes a GGUF file
to float32 on load). `--threads` sets torch's intra-op threads (default: all cores, as
laconic's rayon pool does).
"""

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--method", choices=["lora", "sft"], default="lora")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(args.model))
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=args.rank,
            lora_alpha=2 * args.rank,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, eps=1e-8, weight_decay=0.0)
    vocab = model.config.vocab_size
    total = 0.0
    for i in range(args.warmup + args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq_len + 1))
        start = time.perf_counter()
        out = model(input_ids=ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            out.logits.reshape(-1, vocab).float(), ids[:, 1:].reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            total += time.perf_counter() - start
    step_s = total / args.steps
    print(
        json.dumps(
            {
                "engine": f"pytorch {torch.__version__}",
                "method": args.method,
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "seq_len": args.seq_len,
                "steps": args.steps,
                "step_s": step_s,
                "tokens_per_s": args.batch * args.seq_len / step_s,
                "trainable_params": sum(p.numel() for p in params),
            }
        )
    )


if __name__ == "__main__":
    main()
