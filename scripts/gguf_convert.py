#!/usr/bin/env python3
"""Write a copy of a GGUF with every 2-D tensor stored as F32, Q8_0 or Q4_0 (gguf-py's
dequantizer, then its quantizer); 1-D tensors (norms, biases) stay F32; metadata unchanged.

Used for the like-for-like benchmarks: laconic and llama.cpp read the same file, so both
stream the same bytes per token.

    pip install gguf==0.19.0 numpy
    python3 scripts/gguf_convert.py checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf checkpoints/SmolLM2-135M-Instruct.F32.gguf
    python3 scripts/gguf_convert.py --type q8_0 checkpoints/SmolLM2-135M-Instruct.Q4_1.gguf checkpoints/SmolLM2-135M-Instruct.Q8_0.gguf
"""
import argparse

import gguf
import numpy as np

TYPES = {
    "f32": (None, gguf.LlamaFileType.ALL_F32),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--type", choices=TYPES, default="f32")
    a = ap.parse_args()
    qtype, ftype = TYPES[a.type]
    r = gguf.GGUFReader(a.src)
    w = gguf.GGUFWriter(a.dst, r.fields["general.architecture"].contents())
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = int(ftype) if key == "general.file_type" else field.contents()
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, value, field.types[0], sub_type=sub)
    for t in r.tensors:
        data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        if qtype is not None and data.ndim == 2:
            w.add_tensor(t.name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
