//! Rotary position embeddings exactly as Hugging Face computes them.
//!
//! Hugging Face pairs dimension `i` with `i + d/2` (`rotate_half`), while Burn's
//! `RotaryEncoding` pairs adjacent dimensions; the two are not interchangeable, so the decoder
//! carries its own. Frequencies follow `transformers`' `ROPE_INIT_FUNCTIONS` for `default`,
//! `linear` and `llama3`, and llama.cpp's explicit per-frequency factors (`rope_freqs.weight`).
//!
//! Positions are passed explicitly rather than derived from a sequence offset, so that a KV
//! cache which evicts entries keeps every kept key at its original position.

use burn::prelude::*;

use crate::config::{RopeConfig, RopeScaling};

/// Inverse frequencies of a rotary embedding, one per pair of dimensions.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    /// Builds the inverse frequencies for heads of width `head_dim`.
    pub fn new(config: &RopeConfig, head_dim: usize) -> Self {
        let half = head_dim / 2;
        let base: Vec<f64> = (0..half)
            .map(|i| {
                // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in float32.
                let exponent = (2 * i) as f32 / head_dim as f32;
                (1.0 / config.theta.powf(exponent as f64)) as f32 as f64
            })
            .collect();
        let inv_freq = match &config.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Factors(factors) => base
                .iter()
                .zip(factors)
                .map(|(f, s)| f / *s as f64)
                .collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Self {
            inv_freq: inv_freq.into_iter().map(|f| f as f32).collect(),
            head_dim,
        }
    }

    /// The inverse frequencies, `head_dim / 2` of them.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Cosine and sine tables `[s, head_dim]` for the given positions (`cat(freqs, freqs)` as
    /// in Hugging Face).
    pub fn tables(&self, positions: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
        let d = self.head_dim;
        let mut cos = Vec::with_capacity(positions.len() * d);
        let mut sin = Vec::with_capacity(positions.len() * d);
        for &p in positions {
            let start = cos.len();
            for &f in &self.inv_freq {
                // transformers multiplies in float32 before taking cos/sin.
                let angle = (f * p as f32) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
            cos.extend_from_within(start..start + d / 2);
            sin.extend_from_within(start..start + d / 2);
        }
        let shape = [positions.len(), d];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }

    /// Rotates `x` of shape `[b, h, s, head_dim]` by the tables of [`Rope::tables`] (`[s, d]`).
    pub fn apply(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
        let [_, _, _, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        let cos = cos.clone().unsqueeze::<4>();
        let sin = sin.clone().unsqueeze::<4>();
        x * cos + rotated * sin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies() {
        let rope = Rope::new(
            &RopeConfig {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
            8,
        );
        let expected = [1.0, 0.1, 0.01, 0.001];
        for (a, b) in rope.inv_freq().iter().zip(expected) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = Rope::new(
            &RopeConfig {
                theta: 500000.0,
                scaling: RopeScaling::None,
            },
            64,
        );
        let scaled = Rope::new(
            &RopeConfig {
                theta: 500000.0,
                scaling: RopeScaling::Llama3 {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 8192,
                },
            },
            64,
        );
        let (p, s) = (plain.inv_freq(), scaled.inv_freq());
        assert_eq!(p[0], s[0], "the highest frequency is untouched");
        let last = p.len() - 1;
        assert!(
            (p[last] / 8.0 - s[last]).abs() < 1e-12,
            "the lowest is divided by factor"
        );
        // Medium frequencies lie strictly between the two.
        let mid = (0..p.len()).find(|&i| s[i] != p[i] && (s[i] - p[i] / 8.0).abs() > 1e-12);
        assert!(mid.is_some(), "some frequency is smoothed");
    }

    #[test]
    fn rotation_pairs_i_with_i_plus_half() {
        let device = Device::flex();
        let rope = Rope::new(
            &RopeConfig {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
            4,
        );
        let (cos, sin) = rope.tables(&[3], &device);
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 1, 4]),
            &device,
        );
        let y: Vec<f32> = Rope::apply(x, &cos, &sin)
            .into_data()
            .try_into_vec()
            .unwrap();
        let f = [1.0f32, 0.01];
        let (c0, s0) = ((3.0 * f[0]).cos(), (3.0 * f[0]).sin());
        let (c1, s1) = ((3.0 * f[1]).cos(), (3.0 * f[1]).sin());
        let expected = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + 1.0 * s0,
            4.0 * c1 + 2.0 * s1,
        ];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{y:?} vs {expected:?}");
        }
    }
}
