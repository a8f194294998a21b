//! AdamW as PyTorch computes it, with state keyed by parameter path (so it saves and resumes
//! exactly), clipping by the global gradient norm, and a warmup-then-cosine schedule.
//!
//! Burn's own AdamW clips each tensor apart and keys its state by parameter id; a resumed run
//! rebuilds the model and its ids, and users compare against PyTorch's global-norm clipping.

use std::collections::HashMap;
use std::f64::consts::PI;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::params::{NamedTensor, TensorMap};
use crate::recipe::OptimSection;

/// The learning rate at optimizer step `step` (0-based): linear warmup from 0 over
/// `warmup` steps, then a cosine from `peak` down to `peak * min_ratio` at `total`.
pub fn learning_rate(step: usize, total: usize, peak: f64, warmup: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let min = peak * min_ratio;
    min + (peak - min) * 0.5 * (1.0 + (PI * progress).cos())
}

/// First and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// AdamW with decoupled weight decay (PyTorch's `torch.optim.AdamW` update, bias-corrected).
#[derive(Debug)]
pub struct AdamW {
    config: OptimSection,
    /// Optimizer steps taken.
    steps: usize,
    state: HashMap<String, Moments>,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: OptimSection) -> Self {
        Self {
            config,
            steps: 0,
            state: HashMap::new(),
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The global L2 norm of the gradients of `model`'s parameters.
    pub fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
        struct Norm<'a> {
            grads: &'a GradientsParams,
            sum: f64,
        }
        impl ModuleVisitor for Norm<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.grads.get::<D>(param.id) {
                    let sq: f32 = g.clone().mul(g).sum().into_scalar();
                    self.sum += sq as f64;
                }
            }
        }
        let mut n = Norm { grads, sum: 0.0 };
        model.visit(&mut n);
        n.sum.sqrt()
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`. Gradients
    /// are first scaled so their global norm is at most `max_grad_norm` (as
    /// `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
    pub fn step<M: Module>(&mut self, lr: f64, model: M, mut grads: GradientsParams) -> (M, f64) {
        let norm = Self::grad_norm(&model, &grads);
        let clip = if self.config.max_grad_norm > 0.0 {
            (self.config.max_grad_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        self.steps += 1;
        let mut mapper = Update {
            path: Vec::new(),
            grads: &mut grads,
            state: &mut self.state,
            config: &self.config,
            t: self.steps,
            lr,
            clip,
        };
        (model.map(&mut mapper), norm)
    }

    /// The moments as named tensors (`exp_avg.PATH`, `exp_avg_sq.PATH`), for a checkpoint.
    pub fn state_tensors(&self) -> Vec<NamedTensor> {
        let mut names: Vec<&String> = self.state.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let s = &self.state[name];
            for (prefix, t) in [("exp_avg", &s.m), ("exp_avg_sq", &s.v)] {
                let v = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap_or_default();
                out.push((format!("{prefix}.{name}"), vec![v.len()], v));
            }
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn restore(
        &mut self,
        steps: usize,
        tensors: TensorMap,
        device: &Device,
    ) -> Result<(), String> {
        let mut m: HashMap<String, Tensor<1>> = HashMap::new();
        let mut v: HashMap<String, Tensor<1>> = HashMap::new();
        for (name, (_, values)) in tensors {
            let n = values.len();
            let t = Tensor::<1>::from_data(TensorData::new(values, [n]), device);
            if let Some(p) = name.strip_prefix("exp_avg_sq.") {
                v.insert(p.to_string(), t);
            } else if let Some(p) = name.strip_prefix("exp_avg.") {
                m.insert(p.to_string(), t);
            } else {
                return Err(format!("unexpected optimizer tensor '{name}'"));
            }
        }
        self.state.clear();
        for (name, mt) in m {
            let vt = v
                .remove(&name)
                .ok_or_else(|| format!("'exp_avg_sq.{name}' is missing"))?;
            self.state.insert(name, Moments { m: mt, v: vt });
        }
        if let Some(name) = v.keys().next() {
            return Err(format!("'exp_avg.{name}' is missing"));
        }
        self.steps = steps;
        Ok(())
    }
}

struct Update<'a> {
    path: Vec<String>,
    grads: &'a mut GradientsParams,
    state: &'a mut HashMap<String, Moments>,
    config: &'a OptimSection,
    t: usize,
    lr: f64,
    clip: f64,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return param;
        };
        let name = self.path.join(".");
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let require_grad = tensor.is_require_grad();
        let p = tensor.inner().reshape([n]);
        let mut g = grad.reshape([n]);
        if self.clip < 1.0 {
            g = g.mul_scalar(self.clip);
        }
        let c = self.config;
        let state = self.state.remove(&name).unwrap_or_else(|| Moments {
            m: p.zeros_like(),
            v: p.zeros_like(),
        });
        // torch.optim.AdamW (foreach=False): decay, moments, bias-corrected step.
        let p = p.mul_scalar(1.0 - self.lr * c.weight_decay);
        let m = state
            .m
            .mul_scalar(c.beta1)
            .add(g.clone().mul_scalar(1.0 - c.beta1));
        let v = state
            .v
            .mul_scalar(c.beta2)
            .add(g.clone().mul(g).mul_scalar(1.0 - c.beta2));
        let t = self.t as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let denom = v.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(c.eps);
        let p = p.sub(m.clone().div(denom).mul_scalar(self.lr / bias1));
        self.state.insert(name, Moments { m, v });
        let mut updated = Tensor::<D>::from_inner(p.reshape(dims));
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let lr = |s| learning_rate(s, 100, 1e-3, 10, 0.1);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!(lr(50) < lr(20) && lr(20) < lr(10));
        assert!((lr(100) - 1e-4).abs() < 1e-12);
        assert!((lr(500) - 1e-4).abs() < 1e-12);
    }
}
