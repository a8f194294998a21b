#!/usr/bin/env python3
"""Compare laconic's per-token log-probabilities with transformers' on the same model and text.

Used to check that an exported checkpoint round-trips: `laconic export` writes a Hugging Face
directory, transformers loads it as it is, and both must give the same log-probability for
every token of a text. Prints one JSON line with the largest difference.

How to run (from the repository root; packages in scripts/requirements-fixtures.txt)::

    target/release/laconic export --run checkpoints/runs/smollm2-135m-gsm8k-lora \
        --out exports/smollm2-gsm8k --merge-lora
    /work/pyenv/bin/python scripts/compare_logprobs.py --model exports/smollm2-gsm8k \
        [--laconic target/release/laconic] [--text "..."] [--adapter DIR]

laconic runs with `--weights f32` (the exported safetensors are f32). With `--adapter`, the
directory is the base and the adapter is loaded with `peft` on the transformers side (laconic
reads the merged export, so pass the merged directory as --model and the unmerged base with
--adapter only when comparing an unmerged export).
"""

import argparse
import json
import subprocess

DEFAULT_TEXT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?\n"
    "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--laconic", default="target/release/laconic")
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--adapter")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    out = subprocess.run(
        [args.laconic, "score", "--model", args.model, "--weights", "f32", "--text", args.text, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    ours = json.loads(out.stdout)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    ids = [t["id"] for t in ours]
    hf_ids = tok(args.text)["input_ids"]
    if hf_ids != ids:
        raise SystemExit(f"tokenization differs: laconic {ids[:12]}... vs transformers {hf_ids[:12]}...")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    diffs = []
    for i in range(1, len(ids)):
        ref = logp[i - 1, ids[i]].item()
        got = ours[i]["logprob"]
        diffs.append(abs(ref - got))
    print(
        json.dumps(
            {
                "model": args.model,
                "tokens": len(ids),
                "max_abs_logprob_diff": max(diffs),
                "mean_abs_logprob_diff": sum(diffs) / len(diffs),
                "transformers_mean_logprob": float(
                    sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids))) / (len(ids) - 1)
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
