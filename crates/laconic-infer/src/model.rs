//! The one decoder: Llama, Qwen2/Qwen2.5 and Qwen3 with per-family switches.
//!
//! Structure and tensor names mirror Hugging Face's `LlamaForCausalLM` (`model.layers.N.
//! self_attn.q_proj`, ...): grouped-query attention with rotary embeddings in the
//! `rotate_half` layout, RMSNorm, a SwiGLU MLP, tied or untied output head. Qwen2 adds a
//! bias to q/k/v; Qwen3 adds a per-head RMSNorm on queries and keys and may set `head_dim`
//! apart from `hidden / heads`.
//!
//! The KV cache belongs to the caller ([`KvCache`]); [`Model::forward`] appends to it and can
//! return each layer's attention weights for the new queries and the last hidden states, which
//! eviction policies, labelers and small heads need. The model is plain Burn modules with
//! `Param` tensors, so the trainer runs the same code under autodiff.

use std::sync::Arc;

use burn::module::Param;
use burn::nn::{Embedding, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::cache::{KvCache, LayerCache};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::qmatrix::{MAX_KERNEL_ROWS, QFormat, QMatrix};
use crate::rope::Rope;
use crate::weights::WeightSource;

/// How a model holds its projection weights in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// On the CPU, GGUF `Q8_0`, `Q4_0` and `Q4_1` tensors stay quantized as they are in the
    /// file; everything else (and everything on other devices) is f32.
    #[default]
    Auto,
    /// Every weight dequantized to f32 (what training needs).
    F32,
    /// Every projection and the output head quantized to int8 with a scale per block of 32
    /// (GGUF's `Q8_0`).
    Q8_0,
    /// Every projection and the output head quantized to int8 with a scale per output
    /// channel.
    Int8,
    /// Every projection and the output head quantized to 4 bits per value, blocks of 32 with
    /// one scale (GGUF's `Q4_0`).
    Int4,
}

impl WeightFormat {
    /// Parses `auto`, `f32`, `q8_0`, `int8`, `int4`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "f32" => Self::F32,
            "q8_0" => Self::Q8_0,
            "int8" => Self::Int8,
            "int4" | "q4_0" => Self::Int4,
            _ => return None,
        })
    }

    /// The format every projection is quantized to, if this mode quantizes f32 weights.
    fn quantize_to(self) -> Option<QFormat> {
        match self {
            Self::Q8_0 => Some(QFormat::Int8 { block: 32 }),
            Self::Int8 => Some(QFormat::Int8 { block: usize::MAX }),
            Self::Int4 => Some(QFormat::Q4_0),
            Self::Auto | Self::F32 => None,
        }
    }
}

/// A low-rank adapter on a projection: the layer computes `x W + scale · dropout(x) A B`.
///
/// `A` is `[d_in, rank]` and `B` `[rank, d_out]` (PEFT's `lora_A.weight` and
/// `lora_B.weight`, transposed). The adapter stays apart from the base weight, so it can be
/// switched off per call ([`ForwardOptions::base_only`]), saved alone, or merged.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Down projection `[d_in, rank]`.
    pub a: Param<Tensor<2>>,
    /// Up projection `[rank, d_out]`.
    pub b: Param<Tensor<2>>,
    /// `alpha / rank`.
    pub scale: f64,
    /// Dropout on the adapter's input while training (0 for none).
    pub dropout: f64,
}

impl LoraAdapter {
    /// The adapter's rank.
    pub fn rank(&self) -> usize {
        self.a.val().dims()[1]
    }

    /// `scale · dropout(x) A B` for `[n, d_in]`.
    fn forward(&self, x: Tensor<2>, training: bool) -> Tensor<2> {
        let x = if training && self.dropout > 0.0 {
            let keep = 1.0 - self.dropout;
            let mask = x.random_like(burn::tensor::Distribution::Bernoulli(keep));
            x * mask.div_scalar(keep)
        } else {
            x
        };
        x.matmul(self.a.val())
            .matmul(self.b.val())
            .mul_scalar(self.scale)
    }
}

/// A linear layer `y = x Wᵀ + b` whose weight is a dense Burn parameter or a [`QMatrix`] kept
/// quantized in memory, with an optional [`LoraAdapter`].
///
/// With a quantized weight, a few input rows (decode steps, parallel samples) go through
/// [`QMatrix::matmul`], which reads the packed weight directly; longer inputs (a prefill) and
/// autodiff dequantize it for one dense matmul.
#[derive(Module, Debug)]
pub struct Proj {
    /// Dense weight `[d_in, d_out]` (Burn's layout); `None` when the weight is quantized.
    pub weight: Option<Param<Tensor<2>>>,
    /// Bias `[d_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Low-rank adapter, if one is attached.
    pub lora: Option<LoraAdapter>,
    #[module(skip)]
    quant: Option<Arc<QMatrix>>,
}

impl Proj {
    /// A dense layer from Burn-layout weight `[d_in, d_out]`.
    pub fn dense(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Some(Param::from_tensor(weight)),
            bias: bias.map(Param::from_tensor),
            lora: None,
            quant: None,
        }
    }

    /// A layer whose weight stays quantized.
    pub fn quantized(weight: QMatrix, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: None,
            bias: bias.map(Param::from_tensor),
            lora: None,
            quant: Some(Arc::new(weight)),
        }
    }

    /// The quantized weight, if the layer keeps one.
    pub fn quant(&self) -> Option<&QMatrix> {
        self.quant.as_deref()
    }

    /// `(d_in, d_out)`.
    pub fn shape(&self) -> (usize, usize) {
        match (&self.weight, &self.quant) {
            (Some(w), _) => {
                let [i, o] = w.val().dims();
                (i, o)
            }
            (None, Some(q)) => (q.cols(), q.rows()),
            (None, None) => (0, 0),
        }
    }

    /// The weight as a dense `[d_in, d_out]` tensor (dequantized if held quantized), without
    /// the adapter.
    pub fn dense_weight(&self, device: &Device) -> Tensor<2> {
        match (&self.weight, &self.quant) {
            (Some(w), _) => w.val(),
            (None, Some(q)) => Tensor::<2>::from_data(
                TensorData::new(q.dequantize(), [q.rows(), q.cols()]),
                device,
            )
            .transpose(),
            (None, None) => unreachable!("a Proj holds a dense or a quantized weight"),
        }
    }

    /// Folds the adapter into a dense weight (`W + scale · A B`) and removes it. A quantized
    /// weight is dequantized first. Returns whether there was an adapter.
    pub fn merge_lora(&mut self) -> bool {
        let Some(lora) = self.lora.take() else {
            return false;
        };
        let device = lora.a.val().device();
        let delta = lora.a.val().matmul(lora.b.val()).mul_scalar(lora.scale);
        let merged = self.dense_weight(&device) + delta;
        self.weight = Some(Param::from_tensor(merged));
        self.quant = None;
        true
    }

    /// Bytes of weight (and bias) held in memory.
    pub fn weight_bytes(&self) -> usize {
        let dense = self
            .weight
            .as_ref()
            .map_or(0, |w| 4 * w.val().dims().iter().product::<usize>());
        let bias = self.bias.as_ref().map_or(0, |b| 4 * b.val().dims()[0]);
        let lora = self.lora.as_ref().map_or(0, |l| {
            4 * (l.a.val().dims().iter().product::<usize>()
                + l.b.val().dims().iter().product::<usize>())
        });
        dense + bias + lora + self.quant.as_ref().map_or(0, |q| q.bytes())
    }

    /// Applies the layer (with its adapter, if any) to `[n, d_in]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.forward_with(x, ForwardOptions::default())
    }

    /// Applies the layer to `[n, d_in]`; `opts` says whether the adapter runs and whether
    /// this is a training pass (adapter dropout).
    pub fn forward_with(&self, x: Tensor<2>, opts: ForwardOptions) -> Tensor<2> {
        let delta = match &self.lora {
            Some(l) if !opts.base_only => Some(l.forward(x.clone(), opts.training)),
            _ => None,
        };
        let y = match (&self.weight, &self.quant) {
            (Some(w), _) => x.matmul(w.val()),
            (None, Some(q)) => quant_forward(q, x),
            (None, None) => unreachable!("a Proj holds a dense or a quantized weight"),
        };
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze::<2>(),
            None => y,
        };
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }
}

/// `x Wᵀ` with a quantized `W`: the packed kernel for a few rows, a dequantized matmul else.
fn quant_forward(q: &QMatrix, x: Tensor<2>) -> Tensor<2> {
    let [m, k] = x.dims();
    let n = q.rows();
    let device = x.device();
    if m <= 4 * MAX_KERNEL_ROWS
        && !device.is_autodiff()
        && let Ok(xs) = x.clone().into_data().convert::<f32>().try_into_vec::<f32>()
    {
        let mut y = vec![0f32; m * n];
        q.matmul(&xs, m, &mut y);
        return Tensor::from_data(TensorData::new(y, [m, n]), &device);
    }
    let w = Tensor::<2>::from_data(TensorData::new(q.dequantize(), [n, k]), &device);
    x.matmul(w.transpose())
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Logits {
    /// Every input position (scoring, training).
    All,
    /// Only the last position (generation).
    #[default]
    Last,
    /// None (a prefill whose logits nobody reads).
    None,
}

/// What [`Model::forward`] should return besides updating the cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOptions {
    /// Which positions get logits.
    pub logits: Logits,
    /// Return each layer's attention weights `[b, heads, s, cache_len]`.
    pub attention: bool,
    /// Return the final hidden states (after the last norm) `[b, s, hidden]`.
    pub hidden: bool,
    /// Run without the LoRA adapters (the base model), when the model has any.
    pub base_only: bool,
    /// A training pass: adapter dropout is active.
    pub training: bool,
}

/// The result of a forward pass.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Logits `[b, s or 1, vocab]`, unless [`Logits::None`].
    pub logits: Option<Tensor<3>>,
    /// Final hidden states, if asked for.
    pub hidden: Option<Tensor<3>>,
    /// Attention weights per layer, if asked for (empty otherwise).
    pub attentions: Vec<Tensor<4>>,
}

/// Grouped-query self-attention.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Proj,
    /// Key projection.
    pub k_proj: Proj,
    /// Value projection.
    pub v_proj: Proj,
    /// Output projection.
    pub o_proj: Proj,
    /// Per-head query norm (Qwen3).
    pub q_norm: Option<RmsNorm>,
    /// Per-head key norm (Qwen3).
    pub k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

/// Applies a linear layer to `[b, s, d_in]` as one 2-D matmul `[b*s, d_in]`.
///
/// Burn's `linear` on a 3-D input takes a batched-matmul path that is about 10x slower on
/// flex than the 2-D gemm at decode shapes (measured: 0.21 ms vs 0.02 ms for 576x576).
fn project(layer: &Proj, x: Tensor<3>, opts: ForwardOptions) -> Tensor<3> {
    let [b, s, d] = x.dims();
    let y = layer.forward_with(x.reshape([b * s, d]), opts);
    let n = y.dims()[1];
    y.reshape([b, s, n])
}

/// Repeats KV heads so that `[b, kv, s, d]` becomes `[b, kv * n_rep, s, d]` (head `h` reads
/// KV head `h / n_rep`, as Hugging Face's `repeat_kv`).
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .repeat_dim(2, n_rep)
        .reshape([b, kv * n_rep, s, d])
}

impl Attention {
    /// Attends `x` `[b, s, hidden]` at `positions` over the layer cache, which it extends.
    /// Returns the output `[b, s, hidden]` and, if asked, the weights `[b, heads, s, len]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: (&Tensor<2>, &Tensor<2>),
        positions: &[usize],
        cache: &mut LayerCache,
        opts: ForwardOptions,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let want_weights = opts.attention;
        let [b, s, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let mut q = project(&self.q_proj, x.clone(), opts).reshape([b, s, h, d]);
        let mut k = project(&self.k_proj, x.clone(), opts).reshape([b, s, kv, d]);
        let v = project(&self.v_proj, x, opts)
            .reshape([b, s, kv, d])
            .swap_dims(1, 2);
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(q);
            k = kn.forward(k);
        }
        let q = Rope::apply(q.swap_dims(1, 2), rope.0, rope.1);
        let k = Rope::apply(k.swap_dims(1, 2), rope.0, rope.1);
        let (k, v) = cache.append(k, v, positions);
        let n_rep = h / kv;
        let (out, weights) = if s == 1 && !q.device().is_autodiff() {
            // One new token (decode): each KV head's n_rep query heads as the rows of one
            // product, reading the cache buffers through strided matrix products, without
            // copying the cache (the fused kernel would make keys and values contiguous) or
            // repeating it per query head.
            let len = k.dims()[2];
            let scores = q
                .reshape([b, kv, n_rep, d])
                .matmul(k.swap_dims(2, 3))
                .mul_scalar(1.0 / (d as f64).sqrt());
            let w = softmax(scores, 3);
            let out = w.clone().matmul(v).reshape([b, h, 1, d]);
            (out, want_weights.then(|| w.reshape([b, h, 1, len])))
        } else if want_weights {
            let k = repeat_kv(k, n_rep);
            let v = repeat_kv(v, n_rep);
            let len = k.dims()[2];
            let scores = q
                .matmul(k.swap_dims(2, 3))
                .mul_scalar(1.0 / (d as f64).sqrt());
            let scores = if s > 1 {
                // Query i sits at cache index len - s + i and sees keys up to it.
                let mask =
                    Tensor::<2, Bool>::tril_mask([s, len], (len - s) as i64, &scores.device());
                scores.mask_fill(mask.unsqueeze::<4>(), f32::NEG_INFINITY)
            } else {
                scores
            };
            let w = softmax(scores, 3);
            (w.clone().matmul(v), Some(w))
        } else {
            // The fused kernel handles GQA natively, but not under autodiff.
            let (k, v) = if q.device().is_autodiff() {
                (repeat_kv(k, n_rep), repeat_kv(v, n_rep))
            } else {
                (k, v)
            };
            let opts = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: s > 1,
            };
            (attention(q, k, v, None, None, opts), None)
        };
        let out = out.swap_dims(1, 2).reshape([b, s, h * d]);
        (project(&self.o_proj, out, opts), weights)
    }
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection.
    pub gate_proj: Proj,
    /// Up projection.
    pub up_proj: Proj,
    /// Down projection.
    pub down_proj: Proj,
}

impl Mlp {
    /// Applies the MLP to `[b, s, hidden]`.
    pub fn forward(&self, x: Tensor<3>, opts: ForwardOptions) -> Tensor<3> {
        let gate = silu(project(&self.gate_proj, x.clone(), opts));
        project(
            &self.down_proj,
            gate * project(&self.up_proj, x, opts),
            opts,
        )
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Self-attention.
    pub self_attn: Attention,
    /// MLP.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

/// A causal language model.
#[derive(Module, Debug)]
pub struct Model {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output head; `None` when tied to the embedding (and kept dense). A tied head whose
    /// embedding is quantized in the file gets its own quantized copy here.
    pub lm_head: Option<Proj>,
    #[module(skip)]
    config: ModelConfig,
    #[module(skip)]
    rope: Rope,
}

impl Model {
    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Bytes of weights that one decode step reads: every projection as held in memory
    /// (quantized or f32), the output head (the embedding when tied and dense), and the norms.
    /// This over the machine's memory bandwidth is the decode speed limit.
    pub fn decode_weight_bytes(&self) -> usize {
        let norm = |n: &RmsNorm| 4 * n.gamma.val().dims()[0];
        let mut bytes = norm(&self.norm);
        for l in &self.layers {
            let a = &l.self_attn;
            bytes += [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj]
                .into_iter()
                .chain([&l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj])
                .map(Proj::weight_bytes)
                .sum::<usize>();
            bytes += norm(&l.input_layernorm) + norm(&l.post_attention_layernorm);
        }
        bytes
            + match &self.lm_head {
                Some(h) => h.weight_bytes(),
                None => {
                    4 * self
                        .embed_tokens
                        .weight
                        .val()
                        .dims()
                        .iter()
                        .product::<usize>()
                }
            }
    }

    /// Every projection with its Hugging Face name (`model.layers.0.self_attn.q_proj`, ...,
    /// `lm_head` when the head is untied), in a fixed order.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Proj)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let a = &mut l.self_attn;
            let p = format!("model.layers.{i}.self_attn");
            out.push((format!("{p}.q_proj"), &mut a.q_proj));
            out.push((format!("{p}.k_proj"), &mut a.k_proj));
            out.push((format!("{p}.v_proj"), &mut a.v_proj));
            out.push((format!("{p}.o_proj"), &mut a.o_proj));
            let m = &mut l.mlp;
            let p = format!("model.layers.{i}.mlp");
            out.push((format!("{p}.gate_proj"), &mut m.gate_proj));
            out.push((format!("{p}.up_proj"), &mut m.up_proj));
            out.push((format!("{p}.down_proj"), &mut m.down_proj));
        }
        if let Some(h) = &mut self.lm_head {
            out.push(("lm_head".to_string(), h));
        }
        out
    }

    /// Folds every LoRA adapter into its base weight; returns how many there were.
    pub fn merge_lora(&mut self) -> usize {
        self.projections_mut()
            .into_iter()
            .filter(|(_, p)| p.lora.is_some())
            .map(|(_, p)| p.merge_lora())
            .filter(|&m| m)
            .count()
    }

    /// Holds every dense projection, and the output head (a tied head gets its own copy),
    /// quantized as `weights` says (`Q8_0`, `Int8` or `Int4`), so that decoding goes through
    /// the packed kernel; adapters are merged first, and the embedding keeps the values its
    /// quantization gives, as in a GGUF export: the result equals loading the same weights
    /// with [`Model::load_with`] in that format. For a sampling copy of a model in
    /// training (GRPO rollouts): on the CPU this decodes several times faster than f32.
    /// Quantized storage is a CPU (flex) feature: on other devices, and for `Auto` or `F32`,
    /// nothing changes. Returns the number of matrices quantized.
    pub fn pack_weights(&mut self, weights: WeightFormat) -> usize {
        let Some(format) = weights.quantize_to() else {
            return 0;
        };
        let device = self.embed_tokens.weight.device();
        if device != Device::flex() || device.is_autodiff() {
            return 0;
        }
        self.merge_lora();
        let read = |t: Tensor<2>| -> Option<Vec<f32>> {
            t.into_data().convert::<f32>().try_into_vec::<f32>().ok()
        };
        let mut count = 0;
        for (_, proj) in self.projections_mut() {
            if proj.weight.is_none() {
                continue;
            }
            let (d_in, d_out) = proj.shape();
            // Burn's [d_in, d_out] to the kernel's rows = d_out.
            let Some(w) = read(proj.dense_weight(&device).transpose()) else {
                continue;
            };
            if let Some(q) = QMatrix::quantize(&w, d_out, d_in, format) {
                let bias = proj.bias.take().map(|b| b.val());
                *proj = Proj::quantized(q, bias);
                count += 1;
            }
        }
        // The embedding as a GGUF export holds it (and as `load_with` quantizes it): the
        // lookup reads the dequantized values, and a tied head multiplies by the packed ones.
        let [vocab, hidden] = self.embed_tokens.weight.val().dims();
        if let Some(q) = read(self.embed_tokens.weight.val())
            .and_then(|e| QMatrix::quantize(&e, vocab, hidden, format))
        {
            self.embed_tokens.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(q.dequantize(), [vocab, hidden]),
                &device,
            ));
            if self.lm_head.is_none() {
                self.lm_head = Some(Proj::quantized(q, None));
                count += 1;
            }
        }
        count
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Runs `tokens` `[b, s]` through the model, continuing from the cache, which it extends.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        cache: &mut KvCache,
        opts: ForwardOptions,
    ) -> ForwardOutput {
        let [_, s] = tokens.dims();
        let device = tokens.device();
        let start = cache.next_position();
        let positions: Vec<usize> = (start..start + s).collect();
        let (cos, sin) = self.rope.tables(&positions, &device);
        let mut x = self.embed_tokens.forward(tokens);
        let mut attentions = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (a, w) = layer.self_attn.forward(
                layer.input_layernorm.forward(x.clone()),
                (&cos, &sin),
                &positions,
                cache.layer_mut(i),
                opts,
            );
            x = x + a;
            x = x.clone()
                + layer
                    .mlp
                    .forward(layer.post_attention_layernorm.forward(x), opts);
            attentions.extend(w);
        }
        cache.advance(s);
        let h = self.norm.forward(x);
        let logits = match opts.logits {
            Logits::None => None,
            Logits::All => Some(self.head_with(h.clone(), opts)),
            Logits::Last => Some(self.head_with(h.clone().narrow(1, s - 1, 1), opts)),
        };
        ForwardOutput {
            logits,
            hidden: opts.hidden.then_some(h),
            attentions,
        }
    }

    /// The output head on hidden states `[b, s, hidden]`.
    pub fn head(&self, h: Tensor<3>) -> Tensor<3> {
        self.head_with(h, ForwardOptions::default())
    }

    /// The output head on hidden states `[b, s, hidden]`, with or without its adapter.
    pub fn head_with(&self, h: Tensor<3>, opts: ForwardOptions) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => project(head, h, opts),
            None => {
                let [b, s, d] = h.dims();
                let logits = h
                    .reshape([b * s, d])
                    .matmul(self.embed_tokens.weight.val().transpose());
                let vocab = logits.dims()[1];
                logits.reshape([b, s, vocab])
            }
        }
    }

    /// Builds the model from named weights in Hugging Face layout, with
    /// [`WeightFormat::Auto`].
    pub fn load(config: ModelConfig, source: &dyn WeightSource, device: &Device) -> Result<Self> {
        Self::load_with(config, source, device, WeightFormat::Auto)
    }

    /// Builds the model from named weights in Hugging Face layout, holding the projection
    /// weights as `weights` says. Quantized storage is a CPU (flex) feature: on any other
    /// device every weight is f32.
    pub fn load_with(
        config: ModelConfig,
        source: &dyn WeightSource,
        device: &Device,
        weights: WeightFormat,
    ) -> Result<Self> {
        let c = &config;
        let (hd, q_out, kv_out) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
        );
        let weights = if *device == Device::flex() {
            weights
        } else {
            WeightFormat::F32
        };
        let vec1 = |name: &str, n: usize| -> Result<Tensor<1>> {
            let data = source.tensor(name, &[n])?;
            Ok(Tensor::from_data(TensorData::new(data, [n]), device))
        };
        // A projection's weight `[d_out, d_in]` (HF layout) as the weight format asks: the
        // file's own quantized blocks, a quantization of the f32 values, or f32 (`Err(data)`).
        let weight = |name: &str,
                      d_in: usize,
                      d_out: usize|
         -> Result<std::result::Result<QMatrix, Vec<f32>>> {
            if weights == WeightFormat::Auto
                && let Some(q) = source.quantized(name, &[d_out, d_in])?
            {
                return Ok(Ok(q));
            }
            let w = source.tensor(name, &[d_out, d_in])?;
            Ok(match weights.quantize_to() {
                Some(f) => QMatrix::quantize(&w, d_out, d_in, f).ok_or(w),
                None => Err(w),
            })
        };
        // HF stores linear weights as [out, in]; the dense Proj multiplies by [in, out].
        let linear = |name: &str, d_in: usize, d_out: usize, bias: bool| -> Result<Proj> {
            let bias = if bias {
                Some(vec1(&format!("{name}.bias"), d_out)?)
            } else {
                None
            };
            Ok(match weight(&format!("{name}.weight"), d_in, d_out)? {
                Ok(q) => Proj::quantized(q, bias),
                Err(w) => Proj::dense(
                    Tensor::<2>::from_data(TensorData::new(w, [d_out, d_in]), device).transpose(),
                    bias,
                ),
            })
        };
        let norm = |name: &str, n: usize, eps: f64| -> Result<RmsNorm> {
            Ok(RmsNorm {
                gamma: Param::from_tensor(vec1(&format!("{name}.weight"), n)?),
                epsilon: eps,
            })
        };
        let eps = c.rms_norm_eps;
        let mut embed = source.tensor("model.embed_tokens.weight", &[c.vocab_size, hd])?;
        // Quantizing modes quantize the embedding as GGUF files do: the lookup reads its
        // dequantized values, and a tied head multiplies by the packed blocks.
        let quantized_embed = weights
            .quantize_to()
            .and_then(|f| QMatrix::quantize(&embed, c.vocab_size, hd, f));
        if let Some(q) = &quantized_embed {
            embed = q.dequantize();
        }
        let embed_tokens = Embedding {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(embed, [c.vocab_size, hd]),
                device,
            )),
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let (q_norm, k_norm) = if c.qk_norm {
                (
                    Some(norm(&format!("{p}.self_attn.q_norm"), c.head_dim, eps)?),
                    Some(norm(&format!("{p}.self_attn.k_norm"), c.head_dim, eps)?),
                )
            } else {
                (None, None)
            };
            let bias = c.attention_bias;
            layers.push(DecoderLayer {
                self_attn: Attention {
                    q_proj: linear(&format!("{p}.self_attn.q_proj"), hd, q_out, bias)?,
                    k_proj: linear(&format!("{p}.self_attn.k_proj"), hd, kv_out, bias)?,
                    v_proj: linear(&format!("{p}.self_attn.v_proj"), hd, kv_out, bias)?,
                    o_proj: linear(&format!("{p}.self_attn.o_proj"), q_out, hd, false)?,
                    q_norm,
                    k_norm,
                    num_heads: c.num_heads,
                    num_kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                },
                mlp: Mlp {
                    gate_proj: linear(
                        &format!("{p}.mlp.gate_proj"),
                        hd,
                        c.intermediate_size,
                        false,
                    )?,
                    up_proj: linear(&format!("{p}.mlp.up_proj"), hd, c.intermediate_size, false)?,
                    down_proj: linear(
                        &format!("{p}.mlp.down_proj"),
                        c.intermediate_size,
                        hd,
                        false,
                    )?,
                },
                input_layernorm: norm(&format!("{p}.input_layernorm"), hd, eps)?,
                post_attention_layernorm: norm(&format!("{p}.post_attention_layernorm"), hd, eps)?,
            });
        }
        let lm_head = if c.tie_word_embeddings {
            // The tied head reads the embedding; quantized, it gets its own packed copy.
            let tied = if weights == WeightFormat::Auto {
                source.quantized("model.embed_tokens.weight", &[c.vocab_size, hd])?
            } else {
                quantized_embed
            };
            tied.map(|q| Proj::quantized(q, None))
        } else {
            Some(linear("lm_head", hd, c.vocab_size, false)?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm: norm("model.norm", hd, eps)?,
            lm_head,
            rope: Rope::new(&c.rope, c.head_dim),
            config,
        })
    }
}
