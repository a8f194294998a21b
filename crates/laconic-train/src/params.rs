//! Named access to a model's parameters: read them out by path, write them back by path.
//!
//! Paths are Burn's module paths (`layers.0.self_attn.q_proj.lora.a`, `norm.gamma`), the
//! keys of laconic's checkpoints. Layouts are Burn's (a dense projection weight is
//! `[d_in, d_out]`).

use std::collections::HashMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::error::{Result, TrainError};

/// A parameter's values: `(path, shape, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Tensors by name: `name -> (shape, values)`.
pub type TensorMap = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every float parameter whose path satisfies `keep`, in module order.
pub fn collect<M: Module>(model: &M, keep: impl Fn(&str) -> bool) -> Result<Vec<NamedTensor>> {
    struct Collect<F> {
        path: Vec<String>,
        keep: F,
        out: Vec<NamedTensor>,
        error: Option<String>,
    }
    impl<F: Fn(&str) -> bool> ModuleVisitor for Collect<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            if !(self.keep)(&path) {
                return;
            }
            let t = param.val();
            let shape = t.dims().to_vec();
            match t.into_data().convert::<f32>().try_into_vec::<f32>() {
                Ok(v) => self.out.push((path, shape, v)),
                Err(e) => self.error = Some(format!("{path}: {e:?}")),
            }
        }
    }
    let mut v = Collect {
        path: Vec::new(),
        keep,
        out: Vec::new(),
        error: None,
    };
    model.visit(&mut v);
    match v.error {
        Some(e) => Err(TrainError::Invalid(format!("cannot read parameter {e}"))),
        None => Ok(v.out),
    }
}

/// Overwrites the parameters named in `values` (shape checked); a parameter keeps its id and
/// whether it trains. Returns the model; every name in `values` must exist, else the error
/// names what was not found (`source` names the file it came from).
pub fn assign<M: Module>(model: M, values: TensorMap, source: &std::path::Path) -> Result<M> {
    struct Assign {
        path: Vec<String>,
        values: TensorMap,
        error: Option<String>,
    }
    impl ModuleMapper for Assign {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path = self.path.join(".");
            let Some((shape, v)) = self.values.remove(&path) else {
                return param;
            };
            let (id, tensor, mapper) = param.consume();
            let dims = tensor.dims();
            if shape.as_slice() != dims.as_slice() {
                self.error = Some(format!(
                    "tensor '{path}' has shape {shape:?}, the model expects {dims:?}"
                ));
                return Param::from_mapped_value(id, tensor, mapper);
            }
            let grad = tensor.is_require_grad();
            let device = tensor.device();
            let mut t = Tensor::<D>::from_data(TensorData::new(v, dims), &device);
            if grad {
                t = t.require_grad();
            }
            Param::from_mapped_value(id, t, mapper)
        }
    }
    let mut m = Assign {
        path: Vec::new(),
        values,
        error: None,
    };
    let model = model.map(&mut m);
    if let Some(e) = m.error {
        return Err(TrainError::checkpoint(source, e));
    }
    if let Some(name) = m.values.keys().min() {
        return Err(TrainError::checkpoint(
            source,
            format!(
                "tensor '{name}' matches no parameter of the model ({} unmatched)",
                m.values.len()
            ),
        ));
    }
    Ok(model)
}
