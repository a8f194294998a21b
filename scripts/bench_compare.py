#!/usr/bin/env python3
"""laconic and llama.cpp side by side, in one run, alternating A B A B ... on the same GGUF.

    python3 scripts/bench_compare.py --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf \
        [--rounds 5] [--prompt-tokens 128] [--new-tokens 64] [--laconic target/release/laconic]

Each round runs `laconic bench --json` and `scripts/bench_llama_cpp.py` once (each process
reports the best of its own repetitions); the table gives the median over rounds and the
min-max range. Needs llama-cpp-python in the Python that runs this script.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--laconic", default=str(ROOT / "target/release/laconic"))
    ap.add_argument("--laconic-args", default="", help="extra arguments for `laconic bench`, e.g. '--weights f32'")
    a = ap.parse_args()
    common = ["--model", a.model, "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", str(a.new_tokens)]
    rows = {"laconic": [], "llama.cpp": []}
    for r in range(a.rounds):
        rows["laconic"].append(run([a.laconic, "bench", *common, *a.laconic_args.split(), "--json"]))
        rows["llama.cpp"].append(run([sys.executable, str(ROOT / "scripts/bench_llama_cpp.py"), *common]))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

    def cell(engine, key, fmt):
        v = [x[key] for x in rows[engine]]
        return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"

    print(f"| engine | prefill tok/s ({a.prompt_tokens} tokens) | decode tok/s ({a.new_tokens} tokens) | peak RSS MiB |")
    print("| --- | --- | --- | --- |")
    for e in rows:
        print(f"| {e} | {cell(e, 'prefill_tokens_per_second', '{:.1f}')} | {cell(e, 'decode_tokens_per_second', '{:.1f}')} | {cell(e, 'peak_rss_mib', '{:.0f}')} |")
    lac = rows["laconic"]
    print()
    print(f"laconic decode limit ({lac[0].get('weights', 'weights')} as held): median {statistics.median(x['decode_limit_tokens_per_second'] for x in lac):.1f} tok/s "
          f"= {statistics.median(x['read_bandwidth_gb_per_second'] for x in lac):.2f} GB/s / "
          f"{lac[0]['weight_bytes_per_token'] / 1e6:.0f} MB per token")


if __name__ == "__main__":
    main()
