#!/usr/bin/env python3
"""The llama.cpp side of `laconic bench`: the same measurement through llama-cpp-python.

Prefill N prompt tokens in one batch, then decode M tokens one at a time (greedy), on the
same GGUF, with n_threads=2, reporting the best of R repetitions and the peak resident memory,
as one JSON object with the same keys `laconic bench --json` prints.

    pip install llama-cpp-python==0.3.36        # builds llama.cpp from source
    python3 scripts/bench_llama_cpp.py --model checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import resource
import time

import numpy as np
from llama_cpp import Llama

# The text `laconic bench` cycles through (crates/laconic-cli/src/commands/bench.rs).
TEXT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Natalia sold 48/2 = 24 clips in May. "
    "Natalia sold 48+24 = 72 clips altogether in April and May. "
)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    t = time.perf_counter()
    llm = Llama(
        model_path=a.model,
        n_ctx=a.prompt_tokens + a.new_tokens + 8,
        n_batch=a.prompt_tokens + a.new_tokens + 8,  # llama-cpp-python sizes its logits buffer by n_batch
        n_threads=a.threads,
        n_threads_batch=a.threads,
        verbose=False,
    )
    load_s = time.perf_counter() - t
    base = llm.tokenize(TEXT.encode(), add_bos=False)
    prompt = [base[i % len(base)] for i in range(a.prompt_tokens)]

    best_prefill = best_decode = float("inf")
    for _ in range(a.repeats):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        best_prefill = min(best_prefill, time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(a.new_tokens):
            llm.eval([nxt])
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        best_decode = min(best_decode, time.perf_counter() - t)

    print(json.dumps({
        "model": a.model,
        "engine": "llama.cpp (llama-cpp-python)",
        "prompt_tokens": a.prompt_tokens,
        "new_tokens": a.new_tokens,
        "load_seconds": load_s,
        "prefill_tokens_per_second": a.prompt_tokens / best_prefill,
        "decode_tokens_per_second": a.new_tokens / best_decode,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
