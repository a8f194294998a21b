//! Every GGML type laconic reads, dequantized and compared with the values the `gguf` Python
//! package (llama.cpp's own reference implementation) gives for the same bytes.

mod common;

use laconic_infer::gguf::quant::{GgmlType, dequantize_into};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn dequantization_matches_gguf_py_for_every_type() {
    let fixture = common::read_json(&common::fixtures().join("quant_blocks.json"));
    let mut seen = Vec::new();
    for case in fixture["types"].as_array().expect("types") {
        let name = case["type"].as_str().expect("type");
        let ty = GgmlType::from_id(case["ggml_type"].as_u64().expect("id") as u32);
        assert_eq!(ty.name(), name);
        let bytes = unhex(case["bytes_hex"].as_str().expect("bytes"));
        let expected: Vec<f32> = case["dequantized"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("value") as f32)
            .collect();
        assert_eq!(
            ty.byte_size(expected.len()),
            Some(bytes.len()),
            "{name}: block layout"
        );
        let mut out = Vec::new();
        assert!(
            dequantize_into(ty, &bytes, &mut out),
            "{name}: not supported"
        );
        assert_eq!(out.len(), expected.len(), "{name}");
        for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
            // gguf-py computes in float32 as well; allow one rounding step.
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name}[{i}]: {a} vs {b}"
            );
        }
        seen.push(name.to_string());
    }
    for t in [
        "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K",
    ] {
        assert!(seen.iter().any(|s| s == t), "fixture lacks {t}");
    }
}
