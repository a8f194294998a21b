//! Test data shared by the training, distillation and export tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The tiny fixture models of `laconic-infer` (random weights saved by `transformers`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../laconic-infer/tests/fixtures")
}

/// One fixture model directory (`llama`, `llama3`, `qwen2`, `qwen3`).
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Writes `dir/traces.jsonl` with `n` traces made by `trace(i)` (hand-written test data,
/// not from a dataset) and returns its path.
pub fn write_traces(dir: &Path, n: usize, trace: impl Fn(usize) -> serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join("traces.jsonl");
    let text: String = (0..n).map(|i| format!("{}\n", trace(i))).collect();
    std::fs::write(&path, text).expect("write traces");
    path
}

/// A short addition trace: "What is a + b?" with its one-line reasoning and gold answer.
pub fn addition(i: usize) -> serde_json::Value {
    let (a, b) = (i % 7 + 1, i % 5 + 2);
    serde_json::json!({
        "schema": 1,
        "id": format!("hand/{i}"),
        "question": format!("What is {a} + {b}?"),
        "reasoning": format!("{a} + {b} = {}.", a + b),
        "answer": format!("{}", a + b),
        "gold": format!("{}", a + b),
    })
}

/// How many parameters have gradients in both `a` and `b`, and the largest difference of
/// their entries relative to the largest entry of `a`'s.
pub fn grad_difference(
    model: &laconic_infer::model::Model,
    a: &burn::optim::GradientsParams,
    b: &burn::optim::GradientsParams,
) -> (usize, f32) {
    struct Grads<'a> {
        a: &'a burn::optim::GradientsParams,
        b: &'a burn::optim::GradientsParams,
        compared: usize,
        worst: f32,
    }
    impl burn::module::ModuleVisitor for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::Tensor<D>>) {
            let (Some(x), Some(y)) = (self.a.get::<D>(param.id), self.b.get::<D>(param.id)) else {
                return;
            };
            let x = x.into_data().try_into_vec::<f32>().expect("f32");
            let y = y.into_data().try_into_vec::<f32>().expect("f32");
            let scale = x.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let diff = x
                .iter()
                .zip(&y)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            self.worst = self.worst.max(diff / scale);
            self.compared += 1;
        }
    }
    let mut v = Grads {
        a,
        b,
        compared: 0,
        worst: 0.0,
    };
    burn::module::Module::visit(model, &mut v);
    (v.compared, v.worst)
}
