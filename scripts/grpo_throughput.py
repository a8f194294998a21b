#!/usr/bin/env python3
"""GRPO throughput of a laconic run, from its metrics.jsonl, in the keys that
scripts/bench_grpo_trl.py prints for TRL (so the two sit side by side in docs/BENCHMARKS.md).

    python3 scripts/grpo_throughput.py checkpoints/runs/NAME/metrics.jsonl [--json FILE]

Per optimizer step laconic logs `elapsed_s` (training loop time since the start, resumes
included), and under `grpo`: `tokens` (sampled completion tokens), `rollout_seconds` (time
spent drawing the rollouts), `mean_tokens` and `reward`. Standard library only.
"""

import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    steps = []
    with open(args.metrics, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                v = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{args.metrics}:{n}: not JSON ({e})", file=sys.stderr)
                return 1
            if isinstance(v.get("grpo"), dict) and "elapsed_s" in v:
                steps.append(v)
    if not steps:
        print(f"{args.metrics}: no GRPO steps", file=sys.stderr)
        return 1
    seconds = steps[-1]["elapsed_s"]
    rollout_s = sum(s["grpo"].get("rollout_seconds", 0.0) for s in steps)
    tokens = sum(s["grpo"]["tokens"] for s in steps)
    out = {
        "engine": "laconic",
        "steps": len(steps),
        "train_seconds": seconds,
        "steps_per_minute": 60.0 * len(steps) / seconds if seconds > 0 else 0.0,
        "rollout_seconds": rollout_s,
        "rollout_tokens": tokens,
        "rollout_tokens_per_s": tokens / rollout_s if rollout_s > 0 else 0.0,
        "mean_completion_length": sum(s["grpo"]["mean_tokens"] for s in steps) / len(steps),
        "mean_reward": sum(s["grpo"]["reward"] for s in steps) / len(steps),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
