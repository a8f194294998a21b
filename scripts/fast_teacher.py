#!/usr/bin/env python3
"""A stand-in for a fast teacher cluster, for benchmarking `laconic distill` (a mock: a vLLM or
SGLang cluster cannot run here). It answers every `POST /v1/chat/completions` at once with a
canned GSM8K-style solution of a realistic length (~250 tokens of reasoning, `#### 42` at the
end) and real `usage` counts, and `GET /v1/models` with one model. Python standard library only;
asyncio, keep-alive, one process.

    python3 scripts/fast_teacher.py --port 8765 [--delay-ms 0]

With `--blast N --concurrency C` it instead acts as a load generator against a running endpoint
(same machine): it sends N requests with C connections in flight and prints requests/s, the
ceiling that any client of this endpoint could reach here.
"""

import argparse
import asyncio
import json
import time

STEP = "First we compute the partial amount: 12 * 3 = 36, then we add the rest: 36 + 6 = 42. "
REASONING = (STEP * 12).strip()
CONTENT = REASONING + "\n#### 42"
COMPLETION_TOKENS = 260


def reply_body(request_body: bytes) -> bytes:
    try:
        req = json.loads(request_body or b"{}")
    except json.JSONDecodeError:
        req = {}
    body = {
        "id": "chatcmpl-fast",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.get("model") or "fast-teacher",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CONTENT},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": 120 + COMPLETION_TOKENS,
        },
    }
    return json.dumps(body).encode()


MODELS = json.dumps(
    {"object": "list", "data": [{"id": "fast-teacher", "object": "model", "owned_by": "bench"}]}
).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if delay:
                await asyncio.sleep(delay)
            if method == "GET" and path.endswith("/models"):
                payload, status = MODELS, "200 OK"
            elif method == "POST" and path.endswith("/chat/completions"):
                payload, status = reply_body(body), "200 OK"
            else:
                payload, status = b'{"error":{"message":"not found"}}', "404 Not Found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int, delay: float):
    server = await asyncio.start_server(lambda r, w: handle(r, w, delay), "127.0.0.1", port)
    print(f"fast teacher on http://127.0.0.1:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


async def blast(port: int, total: int, concurrency: int):
    body = json.dumps(
        {"model": "fast-teacher", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 512}
    ).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    remaining = [total]

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while remaining[0] > 0:
            remaining[0] -= 1
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                [l for l in head.decode().split("\r\n") if l.lower().startswith("content-length:")][0].split(":")[1]
            )
            await reader.readexactly(length)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    dt = time.perf_counter() - t0
    print(json.dumps({"requests": total, "concurrency": concurrency, "seconds": dt, "requests_per_s": total / dt}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="latency added to every reply")
    ap.add_argument("--blast", type=int, help="act as a load generator: send this many requests")
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    if args.blast:
        asyncio.run(blast(args.port, args.blast, args.concurrency))
    else:
        asyncio.run(serve(args.port, args.delay_ms / 1000.0))


if __name__ == "__main__":
    main()
