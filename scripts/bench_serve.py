#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible server (`laconic serve`, llama-server, vLLM...):
C clients in parallel, each sending chat completions back to back until N requests are done.
Prints one JSON line: requests/s, generated tokens/s (from `usage`), latency p50/p95, errors.

    python3 scripts/bench_serve.py --url http://127.0.0.1:8080 --requests 32 --concurrency 4 \
        --max-tokens 64

Each request asks a different GSM8K-style question with its own seed and `ignore_eos` (so that
every answer is `--max-tokens` long and runs are comparable). Python standard library only.
"""

import argparse
import http.client
import json
import statistics
import threading
import time
from urllib.parse import urlparse


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default="any")
    args = ap.parse_args()
    u = urlparse(args.url)
    lock = threading.Lock()
    next_id = [0]
    latencies, tokens, errors = [], [0], [0]

    def client():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        while True:
            with lock:
                i = next_id[0]
                if i >= args.requests:
                    break
                next_id[0] += 1
            body = json.dumps(
                {
                    "model": args.model,
                    "messages": [
                        {
                            "role": "user",
                            "content": f"Tom has {i + 3} apples and buys {2 * i + 5} more. How many apples does he have? Think step by step.",
                        }
                    ],
                    "max_tokens": args.max_tokens,
                    "temperature": 0.7,
                    "seed": i,
                    "ignore_eos": True,
                }
            )
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
                usage = json.loads(data)["usage"]
                with lock:
                    latencies.append(dt)
                    tokens[0] += usage["completion_tokens"]
            except Exception:  # noqa: BLE001 - counted, the run goes on
                with lock:
                    errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    print(
        json.dumps(
            {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "max_tokens": args.max_tokens,
                "seconds": round(wall, 2),
                "requests_per_s": round(len(lat) / wall, 3),
                "generated_tok_s": round(tokens[0] / wall, 1),
                "latency_p50_s": round(statistics.median(lat), 2) if lat else None,
                "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 2) if lat else None,
                "errors": errors[0],
            }
        )
    )


if __name__ == "__main__":
    main()
