#!/usr/bin/env python3
"""Write an all-F32 copy of a GGUF (every tensor dequantized by gguf-py, metadata unchanged).

Used for the like-for-like decode benchmark: laconic dequantizes to f32 on load, so llama.cpp
on the F32 copy reads the same bytes per token.

    pip install gguf==0.19.0 numpy
    python3 scripts/gguf_to_f32.py checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf checkpoints/SmolLM2-135M-Instruct.F32.gguf
"""
import sys

import gguf
import numpy as np


def main(src: str, dst: str) -> None:
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = int(gguf.LlamaFileType.ALL_F32) if key == "general.file_type" else field.contents()
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, field.types[0], sub_type=sub)
    for t in r.tensors:
        w.add_tensor(t.name, gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
