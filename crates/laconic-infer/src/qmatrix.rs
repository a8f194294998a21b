//! Weights kept quantized in memory, and the matrix-vector kernels that read them.
//!
//! Burn's quantized matmul on the CPU dequantizes the whole weight on every call (see
//! `../shared/BURN_NOTES.md`), so the decode path does not go through it. A [`QMatrix`] holds a
//! linear layer's weight `[rows = d_out, cols = d_in]` (Hugging Face layout) as packed integers
//! with f32 scales, and [`QMatrix::matmul`] multiplies a few f32 input rows by it without ever
//! materialising the f32 weight: an AVX2/FMA kernel where the CPU has it, a scalar kernel
//! otherwise, both split across rayon's threads by output row. Activations stay f32, so the
//! result equals the dense product with the dequantized weight up to summation order.
//!
//! Formats:
//! - [`QFormat::Int8`]: one f32 scale per block of `block` values; `block = 32` is GGUF's
//!   `Q8_0`, `block = cols` is int8 per output channel.
//! - [`QFormat::Q4_0`]: 4-bit, blocks of 32 with an f32 scale, value `(q - 8) * d` (GGUF's
//!   `Q4_0`, and laconic's int4).
//! - [`QFormat::Q4_1`]: 4-bit, blocks of 32 with a scale and a minimum, value `q * d + m`.
//!
//! Within a 4-bit block, byte `j` holds value `j` in its low nibble and value `j + 16` in its
//! high nibble, as in ggml, so GGUF blocks are repacked without reordering.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use half::f16;
use rayon::prelude::*;

use crate::gguf::quant::GgmlType;
use crate::spin;

/// Values per 4-bit block (and per `Q8_0` block).
pub const QBLOCK: usize = 32;

/// Input rows that the kernel multiplies in one pass over the weight; larger batches are cut
/// into passes of this many rows.
pub const MAX_KERNEL_ROWS: usize = 8;

/// How a [`QMatrix`] stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    /// int8 with one scale per `block` values (32: `Q8_0`; `cols`: per output channel).
    Int8 {
        /// Values per scale.
        block: usize,
    },
    /// 4-bit, blocks of 32, value `(q - 8) * d`.
    Q4_0,
    /// 4-bit, blocks of 32, value `q * d + m`.
    Q4_1,
}

impl QFormat {
    /// Values per scale.
    fn block(self, cols: usize) -> usize {
        match self {
            Self::Int8 { block } => block.min(cols),
            Self::Q4_0 | Self::Q4_1 => QBLOCK,
        }
    }

    /// A short name: `q8_0`, `int8`, `q4_0`, `q4_1`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Int8 { block: QBLOCK } => "q8_0",
            Self::Int8 { .. } => "int8",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
        }
    }
}

/// A weight matrix `[rows, cols]` kept quantized.
#[derive(Clone)]
pub struct QMatrix {
    format: QFormat,
    rows: usize,
    cols: usize,
    /// Packed values, row-major: `cols` bytes per row for int8, `cols / 2` for 4-bit.
    qs: Vec<u8>,
    /// One scale per block, row-major.
    scales: Vec<f32>,
    /// One minimum per block (`Q4_1` only).
    mins: Vec<f32>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QMatrix({} x {}, {}, {} bytes)",
            self.rows,
            self.cols,
            self.format.name(),
            self.bytes()
        )
    }
}

fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

impl QMatrix {
    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage format.
    pub fn format(&self) -> QFormat {
        self.format
    }

    /// Bytes held in memory (values, scales and minimums).
    pub fn bytes(&self) -> usize {
        self.qs.len() + 4 * (self.scales.len() + self.mins.len())
    }

    fn row_qbytes(&self) -> usize {
        match self.format {
            QFormat::Int8 { .. } => self.cols,
            QFormat::Q4_0 | QFormat::Q4_1 => self.cols / 2,
        }
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / self.format.block(self.cols)
    }

    /// Whether `format` can hold a matrix with `cols` columns (whole blocks of 32).
    pub fn supports(format: QFormat, cols: usize) -> bool {
        let block = format.block(cols);
        cols > 0 && block > 0 && cols.is_multiple_of(QBLOCK) && cols.is_multiple_of(block)
    }

    /// Repacks GGUF blocks (`Q8_0`, `Q4_0`, `Q4_1`) of a `[rows, cols]` matrix without
    /// dequantizing them. Returns `None` for other types or a size that does not fit.
    pub fn from_ggml(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let (format, bytes) = match ty {
            GgmlType::Q8_0 => (QFormat::Int8 { block: QBLOCK }, 34),
            GgmlType::Q4_0 => (QFormat::Q4_0, 18),
            GgmlType::Q4_1 => (QFormat::Q4_1, 20),
            _ => return None,
        };
        if !Self::supports(format, cols) || data.len() != rows * cols / QBLOCK * bytes {
            return None;
        }
        let nblocks = rows * cols / QBLOCK;
        let mut m = Self {
            format,
            rows,
            cols,
            qs: Vec::with_capacity(rows * cols),
            scales: Vec::with_capacity(nblocks),
            mins: Vec::new(),
        };
        for b in data.chunks_exact(bytes) {
            m.scales.push(f16_at(b, 0));
            match ty {
                GgmlType::Q8_0 => m.qs.extend_from_slice(&b[2..34]),
                GgmlType::Q4_0 => m.qs.extend_from_slice(&b[2..18]),
                _ => {
                    m.mins.push(f16_at(b, 2));
                    m.qs.extend_from_slice(&b[4..20]);
                }
            }
        }
        Some(m)
    }

    /// Quantizes an f32 matrix `[rows, cols]` (row-major). Returns `None` when `cols` is not
    /// a whole number of blocks.
    pub fn quantize(data: &[f32], rows: usize, cols: usize, format: QFormat) -> Option<Self> {
        if !Self::supports(format, cols) || data.len() != rows * cols {
            return None;
        }
        let block = format.block(cols);
        let mut m = Self {
            format,
            rows,
            cols,
            qs: Vec::with_capacity(rows * cols),
            scales: Vec::with_capacity(rows * cols / block),
            mins: Vec::new(),
        };
        for chunk in data.chunks_exact(block) {
            match format {
                QFormat::Int8 { .. } => {
                    // As gguf-py's Q8_0: d = amax / 127, q = round(x / d), d stored as f16
                    // (for blocks of 32; a per-channel scale stays f32).
                    let amax = chunk.iter().fold(0f32, |a, &x| a.max(x.abs()));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    m.scales
                        .push(if block == QBLOCK { f16_round(d) } else { d });
                    m.qs.extend(
                        chunk
                            .iter()
                            .map(|&x| (x * id).round().clamp(-127.0, 127.0) as i8 as u8),
                    );
                }
                QFormat::Q4_0 => {
                    // As gguf-py's Q4_0: the value of largest magnitude maps to -8, keeping its
                    // sign; q = trunc(x / d + 8.5) in f64, clipped to 0..15; d stored as f16.
                    let max = chunk
                        .iter()
                        .fold(0f32, |a, &x| if x.abs() > a.abs() { x } else { a });
                    let d = max / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    m.scales.push(f16_round(d));
                    let q =
                        |x: f32| ((x as f64 * id as f64 + 8.5).trunc() as i32).clamp(0, 15) as u8;
                    m.qs.extend((0..16).map(|j| q(chunk[j]) | (q(chunk[j + 16]) << 4)));
                }
                QFormat::Q4_1 => {
                    let min = chunk.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = (max - min) / 15.0;
                    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                    m.scales.push(d);
                    m.mins.push(min);
                    let q = |x: f32| (((x - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                    m.qs.extend((0..16).map(|j| q(chunk[j]) | (q(chunk[j + 16]) << 4)));
                }
            }
        }
        Some(m)
    }

    /// Reorders whole rows: row `i` of the result is row `perm[i]` of `self`.
    pub fn permute_rows(&self, perm: &[usize]) -> Self {
        let (rq, bpr) = (self.row_qbytes(), self.blocks_per_row());
        let mut out = Self {
            qs: Vec::with_capacity(self.qs.len()),
            scales: Vec::with_capacity(self.scales.len()),
            mins: Vec::with_capacity(self.mins.len()),
            ..*self
        };
        for &r in perm {
            out.qs.extend_from_slice(&self.qs[r * rq..(r + 1) * rq]);
            out.scales
                .extend_from_slice(&self.scales[r * bpr..(r + 1) * bpr]);
            if !self.mins.is_empty() {
                out.mins
                    .extend_from_slice(&self.mins[r * bpr..(r + 1) * bpr]);
            }
        }
        out
    }

    /// Dequantizes row `r` into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (rq, bpr, block) = (
            self.row_qbytes(),
            self.blocks_per_row(),
            self.format.block(self.cols),
        );
        let qs = &self.qs[r * rq..(r + 1) * rq];
        for b in 0..bpr {
            let d = self.scales[r * bpr + b];
            let o = &mut out[b * block..(b + 1) * block];
            match self.format {
                QFormat::Int8 { .. } => {
                    for (o, &q) in o.iter_mut().zip(&qs[b * block..(b + 1) * block]) {
                        *o = d * (q as i8) as f32;
                    }
                }
                QFormat::Q4_0 | QFormat::Q4_1 => {
                    let m = self.mins.get(r * bpr + b).copied();
                    let (off, add) = match m {
                        Some(m) => (0.0, m),
                        None => (8.0, 0.0),
                    };
                    for (j, &q) in qs[b * 16..(b + 1) * 16].iter().enumerate() {
                        o[j] = d * ((q & 0x0F) as f32 - off) + add;
                        o[j + 16] = d * ((q >> 4) as f32 - off) + add;
                    }
                }
            }
        }
    }

    /// The whole matrix as f32, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols)
            .enumerate()
            .for_each(|(r, row)| self.dequantize_row(r, row));
        out
    }

    /// `y = x · Wᵀ` for `m` input rows `x` `[m, cols]` (row-major), written to `y`
    /// `[m, rows]`, with the kernel [`Kernel::detect`] picks.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        self.matmul_with(x, m, y, Kernel::detect());
    }

    /// [`QMatrix::matmul`] with a chosen kernel (the tests compare them).
    pub fn matmul_with(&self, x: &[f32], m: usize, y: &mut [f32], kernel: Kernel) {
        assert_eq!(
            x.len(),
            m * self.cols,
            "QMatrix::matmul: input is not [m, cols]"
        );
        assert_eq!(
            y.len(),
            m * self.rows,
            "QMatrix::matmul: output is not [m, rows]"
        );
        for start in (0..m).step_by(MAX_KERNEL_ROWS) {
            let mm = (m - start).min(MAX_KERNEL_ROWS);
            let xs = &x[start * self.cols..(start + mm) * self.cols];
            let ys = &mut y[start * self.rows..(start + mm) * self.rows];
            self.matmul_pass(xs, mm, ys, kernel);
        }
    }

    /// One pass over the weight for at most [`MAX_KERNEL_ROWS`] inputs.
    fn matmul_pass(&self, x: &[f32], m: usize, y: &mut [f32], kernel: Kernel) {
        let block = self.format.block(self.cols);
        let bpr = self.blocks_per_row();
        let int8 = kernel.quantizes_activations();
        // Per-block sums of each input: the 4-bit formats fold their offset or minimum in.
        let xsums: Vec<f32> = if int8 || matches!(self.format, QFormat::Int8 { .. }) {
            Vec::new()
        } else {
            x.chunks_exact(block).map(|c| c.iter().sum()).collect()
        };
        let xq = if int8 {
            QuantizedInput::new(x, self.cols)
        } else {
            QuantizedInput::default()
        };
        let ctx = RowCtx {
            q: self,
            x,
            xsums: &xsums,
            xq: &xq,
            m,
            bpr,
            block,
        };
        // Rows `r0..` for every input: `outs[j]` is input j's slice of `y` from row `r0`.
        let run = |r0: usize, outs: &mut [&mut [f32]]| {
            let mut o = [0f32; MAX_KERNEL_ROWS];
            for i in 0..outs[0].len() {
                ctx.row(r0 + i, &mut o[..m], kernel);
                for (j, out) in outs.iter_mut().enumerate() {
                    out[i] = o[j];
                }
            }
        };
        let mut outs: Vec<&mut [f32]> = y.chunks_exact_mut(self.rows).collect();
        let macs = self.rows * self.cols * m;
        let pair = spin::available();
        if macs < SPIN_MIN_MACS || self.rows < 16 || (macs < PARALLEL_MIN_MACS && !pair) {
            // Handing over to a second thread costs more than a small product.
            run(0, &mut outs);
        } else if pair && (macs < PARALLEL_MIN_MACS || rayon::current_num_threads() <= 2) {
            // Two halves of the rows: one here, one on the spinning helper, which is awake
            // between the products of a token where rayon's workers would have to be woken.
            let mid = (self.rows / 2).next_multiple_of(8).min(self.rows);
            let mut second: Vec<&mut [f32]> = outs
                .iter_mut()
                .map(|o| {
                    let (head, tail) = std::mem::take(o).split_at_mut(mid);
                    *o = head;
                    tail
                })
                .collect();
            let run = &run;
            spin::run_pair(|| run(0, &mut outs), move || run(mid, &mut second));
        } else {
            let per_task = (self.rows / (2 * rayon::current_num_threads())).clamp(8, 4096);
            // Each task gets the same rows of every input's output.
            let mut tasks: Vec<(usize, Vec<&mut [f32]>)> = Vec::new();
            let mut r0 = 0;
            while r0 < self.rows {
                let n = per_task.min(self.rows - r0);
                let group = outs
                    .iter_mut()
                    .map(|o| {
                        let (head, tail) = std::mem::take(o).split_at_mut(n);
                        *o = tail;
                        head
                    })
                    .collect();
                tasks.push((r0, group));
                r0 += n;
            }
            tasks
                .into_par_iter()
                .for_each(|(r0, mut group)| run(r0, &mut group));
        }
    }
}

/// Multiply-adds below which a product runs on the calling thread even when the spinning
/// helper ([`crate::spin`]) is awake: a 576x192 projection (110,592) is split, a 64-row one not.
const SPIN_MIN_MACS: usize = 1 << 16;

/// Multiply-adds below which a product is not split across rayon's threads. Waking rayon's other
/// threads costs tens of microseconds (futex wake-ups, and the idle workers' yielding), about
/// what a 576x1536 Q4_1 product takes on one core, so a small model's per-layer products stay
/// on one thread and only large ones (a 49,152-row output head, a 1.5B model's MLP) are split:
/// SmolLM2-135M Q4_1 decodes at about 85 tokens/s with this bound against 63 with 2^19
/// (docs/BENCHMARKS.md).
const PARALLEL_MIN_MACS: usize = 1 << 22;

/// `v` (|v| ≤ 127.5) rounded to the nearest integer, ties to even: adding 1.5 · 2^23 leaves
/// the rounded value in the low mantissa bits. Unlike `f32::round` (a `roundf` call without
/// SSE4.1 at compile time) this vectorizes; it quantized a 135M model's activations in a tenth
/// of the time.
#[inline(always)]
fn nearest_i8(v: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i8
}

/// Activations quantized as llama.cpp does for its integer dot products: int8 in blocks of
/// 32, one f32 scale per block, and each block's integer sum (for the 4-bit offsets).
#[derive(Default)]
struct QuantizedInput {
    qs: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    /// `scales[i] * sums[i]`: what a 4-bit block's offset or minimum multiplies.
    dxsums: Vec<f32>,
    /// Per input, per pair of blocks, 16 lanes: the first block's scale in lanes 0-7 and the
    /// second's in lanes 8-15 (0 past an odd last block), as the AVX-512 kernel's block-pair
    /// dot products are laid out: one vector load per pair instead of two scalar loads, two
    /// broadcasts and a blend.
    pair_scales: Vec<f32>,
}

impl QuantizedInput {
    /// Quantizes `x`, inputs of `cols` values each (`cols` a multiple of 32).
    fn new(x: &[f32], cols: usize) -> Self {
        let n = x.len() / QBLOCK;
        let mut out = Self {
            qs: Vec::with_capacity(x.len()),
            scales: Vec::with_capacity(n),
            sums: Vec::with_capacity(n),
            dxsums: Vec::with_capacity(n),
            pair_scales: Vec::new(),
        };
        for chunk in x.chunks_exact(QBLOCK) {
            let chunk: &[f32; QBLOCK] = chunk.try_into().unwrap_or(&[0.0; QBLOCK]);
            let amax = chunk.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut q = [0i8; QBLOCK];
            for (q, &v) in q.iter_mut().zip(chunk) {
                *q = nearest_i8(v * id);
            }
            let sum = q.iter().map(|&v| v as i32).sum::<i32>();
            out.qs.extend_from_slice(&q);
            out.scales.push(d);
            out.sums.push(sum);
            out.dxsums.push(d * sum as f32);
        }
        let chunks = (cols / QBLOCK).max(1);
        out.pair_scales.reserve(n.div_ceil(2) * 16);
        for input in out.scales.chunks(chunks) {
            for pair in input.chunks(2) {
                let second = pair.get(1).copied().unwrap_or(0.0);
                out.pair_scales.extend_from_slice(&[pair[0]; 8]);
                out.pair_scales.extend_from_slice(&[second; 8]);
            }
        }
        out
    }
}

/// Which matrix-vector kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, f32 activations: the dense product with the dequantized weight.
    Scalar,
    /// x86-64 AVX2 + FMA, f32 activations.
    Avx2,
    /// Portable Rust, activations quantized to int8 per block of 32 (llama.cpp's scheme).
    ScalarInt8,
    /// x86-64 AVX2 integer dot products on int8-quantized activations.
    Avx2Int8,
    /// x86-64 AVX-512 VNNI (`vpdpbusd`) on int8-quantized activations, two blocks per
    /// instruction: the fast default where the CPU has it.
    Avx512Int8,
}

static EXACT: AtomicBool = AtomicBool::new(false);

/// Chooses f32 activations (`true`: the result equals the dense product with the
/// dequantized weight, up to summation order) or int8-quantized activations (`false`, the
/// default: about twice as fast, as llama.cpp computes). The environment variable
/// `LACONIC_EXACT_ACTIVATIONS=1` sets it at start-up.
pub fn set_exact_activations(exact: bool) {
    EXACT.store(exact, Ordering::Relaxed);
}

fn exact_activations() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    *ENV.get_or_init(|| std::env::var("LACONIC_EXACT_ACTIVATIONS").is_ok_and(|v| v == "1"))
        || EXACT.load(Ordering::Relaxed)
}

impl Kernel {
    /// The fastest kernel this CPU runs, honouring [`set_exact_activations`]. The
    /// environment variable `LACONIC_NO_AVX512=1` skips the AVX-512 kernel (to compare it
    /// with the AVX2 one on the same machine).
    pub fn detect() -> Self {
        let exact = exact_activations();
        #[cfg(target_arch = "x86_64")]
        {
            static NO_AVX512: OnceLock<bool> = OnceLock::new();
            let no_avx512 = *NO_AVX512
                .get_or_init(|| std::env::var("LACONIC_NO_AVX512").is_ok_and(|v| v == "1"));
            if !exact && !no_avx512 && avx512_vnni() {
                return Self::Avx512Int8;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return if exact { Self::Avx2 } else { Self::Avx2Int8 };
            }
        }
        if exact {
            Self::Scalar
        } else {
            Self::ScalarInt8
        }
    }

    /// Whether this kernel quantizes its activations to int8.
    pub fn quantizes_activations(self) -> bool {
        matches!(self, Self::ScalarInt8 | Self::Avx2Int8 | Self::Avx512Int8)
    }

    /// Every kernel this CPU can run (the tests compare them).
    pub fn available() -> Vec<Self> {
        let mut out = vec![Self::Scalar, Self::ScalarInt8];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                out.extend([Self::Avx2, Self::Avx2Int8]);
            }
            if avx512_vnni() {
                out.push(Self::Avx512Int8);
            }
        }
        out
    }
}

/// Whether the CPU has what the AVX-512 VNNI kernel uses (and AVX2/FMA, which it also uses).
#[cfg(target_arch = "x86_64")]
fn avx512_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

/// What one output row's dot products need.
struct RowCtx<'a> {
    q: &'a QMatrix,
    x: &'a [f32],
    xsums: &'a [f32],
    xq: &'a QuantizedInput,
    m: usize,
    bpr: usize,
    block: usize,
}

impl RowCtx<'_> {
    fn row(&self, r: usize, out: &mut [f32], kernel: Kernel) {
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: the AVX2 kernels are only chosen (by `detect`, or by a caller that
            // checked the same features) on a CPU with AVX2 and FMA.
            Kernel::Avx2 => return unsafe { avx2::row(self, r, out) },
            Kernel::Avx2Int8 => return unsafe { avx2::row_int8(self, r, out) },
            // SAFETY: chosen only where `avx512_vnni()` holds (by `detect` or `available`).
            Kernel::Avx512Int8 => return unsafe { avx512::row_int8(self, r, out) },
            _ => {}
        }
        if kernel.quantizes_activations() {
            self.row_scalar_int8(r, out);
        } else {
            self.row_scalar(r, out);
        }
    }

    /// The weight scale of 32-value chunk `g` of row `r`.
    fn chunk_scale(&self, r: usize, g: usize) -> f32 {
        self.q.scales[r * self.bpr + g * QBLOCK / self.block]
    }

    fn row_scalar_int8(&self, r: usize, out: &mut [f32]) {
        let q = self.q;
        let rq = q.row_qbytes();
        let qs = &q.qs[r * rq..(r + 1) * rq];
        let chunks = q.cols / QBLOCK;
        for (j, o) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for g in 0..chunks {
                let xi = j * chunks + g;
                let xq = &self.xq.qs[xi * QBLOCK..(xi + 1) * QBLOCK];
                let dx = self.xq.scales[xi];
                let d = self.chunk_scale(r, g);
                acc += match q.format {
                    QFormat::Int8 { .. } => {
                        let w = &qs[g * QBLOCK..(g + 1) * QBLOCK];
                        let dot: i32 = w
                            .iter()
                            .zip(xq)
                            .map(|(&w, &x)| (w as i8) as i32 * x as i32)
                            .sum();
                        d * dx * dot as f32
                    }
                    QFormat::Q4_0 | QFormat::Q4_1 => {
                        let w = &qs[g * 16..(g + 1) * 16];
                        let dot: i32 = w
                            .iter()
                            .enumerate()
                            .map(|(i, &w)| {
                                (w & 0x0F) as i32 * xq[i] as i32
                                    + (w >> 4) as i32 * xq[i + 16] as i32
                            })
                            .sum();
                        let sum = self.xq.sums[xi] as f32;
                        match q.format {
                            QFormat::Q4_0 => d * dx * (dot as f32 - 8.0 * sum),
                            _ => d * dx * dot as f32 + q.mins[r * self.bpr + g] * dx * sum,
                        }
                    }
                };
            }
            *o = acc;
        }
    }

    fn row_scalar(&self, r: usize, out: &mut [f32]) {
        let q = self.q;
        let rq = q.row_qbytes();
        let qs = &q.qs[r * rq..(r + 1) * rq];
        out.iter_mut().for_each(|o| *o = 0.0);
        for b in 0..self.bpr {
            let d = q.scales[r * self.bpr + b];
            for (j, o) in out.iter_mut().enumerate() {
                let xb = &self.x[j * q.cols + b * self.block..j * q.cols + (b + 1) * self.block];
                let s = match q.format {
                    QFormat::Int8 { .. } => qs[b * self.block..(b + 1) * self.block]
                        .iter()
                        .zip(xb)
                        .map(|(&w, &x)| (w as i8) as f32 * x)
                        .sum::<f32>(),
                    QFormat::Q4_0 | QFormat::Q4_1 => qs[b * 16..(b + 1) * 16]
                        .iter()
                        .enumerate()
                        .map(|(i, &w)| (w & 0x0F) as f32 * xb[i] + (w >> 4) as f32 * xb[i + 16])
                        .sum::<f32>(),
                };
                let xsum = || self.xsums[j * self.bpr + b];
                *o += match q.format {
                    QFormat::Int8 { .. } => d * s,
                    QFormat::Q4_0 => d * (s - 8.0 * xsum()),
                    QFormat::Q4_1 => d * s + q.mins[r * self.bpr + b] * xsum(),
                };
            }
        }
    }
}

/// Calls `$f::<M>` with `M` the pass's input count, a constant so that the per-input
/// accumulators live in registers.
macro_rules! for_inputs {
    ($f:ident, $c:expr, $r:expr, $out:expr) => {
        match $c.m {
            1 => $f::<1>($c, $r, $out),
            2 => $f::<2>($c, $r, $out),
            3 => $f::<3>($c, $r, $out),
            4 => $f::<4>($c, $r, $out),
            5 => $f::<5>($c, $r, $out),
            6 => $f::<6>($c, $r, $out),
            7 => $f::<7>($c, $r, $out),
            _ => $f::<8>($c, $r, $out),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2/FMA kernel: 8 values per vector, up to [`super::MAX_KERNEL_ROWS`] inputs per
    //! pass so that each weight byte is decoded once for all of them.

    // The loops index several per-input arrays (accumulators, offsets, inputs) by `j`.
    #![allow(clippy::needless_range_loop)]

    use super::{QBLOCK, QFormat, RowCtx};
    use std::arch::x86_64::*;

    /// Horizontal sum of 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// One output row for every input of the pass, on f32 activations.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row(c: &RowCtx<'_>, r: usize, out: &mut [f32]) {
        for_inputs!(row_m, c, r, out)
    }

    /// One output row for every input of the pass, on int8-quantized activations.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_int8(c: &RowCtx<'_>, r: usize, out: &mut [f32]) {
        for_inputs!(row_int8_m, c, r, out)
    }

    /// 32 weights times 32 activations, as 8 i32 lane sums: `maddubs` multiplies unsigned
    /// by signed bytes into i16 pairs (at most 2 * 255 * 127, no saturation for 4-bit
    /// weights or for the sign trick on int8), `madd` adds the pairs into i32.
    #[target_feature(enable = "avx2,fma")]
    fn dot_u8_i8(w: __m256i, x: __m256i) -> __m256 {
        let pairs = _mm256_maddubs_epi16(w, x);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma")]
    fn row_int8_m<const M: usize>(c: &RowCtx<'_>, r: usize, out: &mut [f32]) {
        let q = c.q;
        let chunks = q.cols / QBLOCK;
        let rq = q.row_qbytes();
        let qs = &q.qs[r * rq..(r + 1) * rq];
        let scales = &q.scales[r * c.bpr..(r + 1) * c.bpr];
        let xq = c.xq.qs.as_ptr();
        // Two accumulators per input (even and odd blocks) halve the FMA dependency chain.
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        let mut extra = [[0f32; 2]; M];
        match q.format {
            QFormat::Int8 { .. } => {
                let per_row = c.block != QBLOCK;
                for g in 0..chunks {
                    let d = if per_row { scales[0] } else { scales[g] };
                    // SAFETY: chunk `g` has 32 bytes at `32 * g` within the row.
                    let w =
                        unsafe { _mm256_loadu_si256(qs.as_ptr().add(32 * g) as *const __m256i) };
                    let aw = _mm256_sign_epi8(w, w);
                    for j in 0..M {
                        let xi = j * chunks + g;
                        // SAFETY: input `j` has `chunks` blocks of 32 quantized values.
                        let x = unsafe { _mm256_loadu_si256(xq.add(32 * xi) as *const __m256i) };
                        let p = dot_u8_i8(aw, _mm256_sign_epi8(x, w));
                        let a = &mut acc[j][g & 1];
                        *a = _mm256_fmadd_ps(p, _mm256_set1_ps(d * c.xq.scales[xi]), *a);
                    }
                }
            }
            QFormat::Q4_0 | QFormat::Q4_1 => {
                let mask = _mm256_set1_epi8(0x0F);
                let mins = if q.format == QFormat::Q4_1 {
                    &q.mins[r * c.bpr..(r + 1) * c.bpr]
                } else {
                    &[][..]
                };
                for g in 0..chunks {
                    let d = scales[g];
                    // SAFETY: block `g` has 16 bytes at `16 * g` within the row.
                    let raw = unsafe { _mm_loadu_si128(qs.as_ptr().add(16 * g) as *const __m128i) };
                    // Low nibbles are values 0..16, high nibbles values 16..32.
                    let w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), mask);
                    let min = if mins.is_empty() { -8.0 * d } else { mins[g] };
                    for j in 0..M {
                        let xi = j * chunks + g;
                        // SAFETY: input `j` has `chunks` blocks of 32 quantized values.
                        let x = unsafe { _mm256_loadu_si256(xq.add(32 * xi) as *const __m256i) };
                        let dx = c.xq.scales[xi];
                        let a = &mut acc[j][g & 1];
                        *a = _mm256_fmadd_ps(dot_u8_i8(w, x), _mm256_set1_ps(d * dx), *a);
                        extra[j][g & 1] += min * dx * c.xq.sums[xi] as f32;
                    }
                }
            }
        }
        for j in 0..M {
            out[j] = hsum(_mm256_add_ps(acc[j][0], acc[j][1])) + extra[j][0] + extra[j][1];
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn row_m<const M: usize>(c: &RowCtx<'_>, r: usize, out: &mut [f32]) {
        let q = c.q;
        let cols = q.cols;
        let rq = q.row_qbytes();
        let qs = &q.qs[r * rq..(r + 1) * rq];
        let scales = &q.scales[r * c.bpr..(r + 1) * c.bpr];
        let mut acc = [_mm256_setzero_ps(); M];
        let mut extra = [0f32; M];
        match q.format {
            QFormat::Int8 { .. } => {
                for (b, &d) in scales.iter().enumerate() {
                    let mut s = [_mm256_setzero_ps(); M];
                    let base = b * c.block;
                    for g in (0..c.block).step_by(8) {
                        // SAFETY: `base + g + 8 <= cols = qs.len()` (blocks tile the row).
                        let w = unsafe {
                            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                                qs.as_ptr().add(base + g) as *const __m128i,
                            )))
                        };
                        for (j, s) in s.iter_mut().enumerate() {
                            // SAFETY: input `j < M <= m` has `cols` values from `j * cols`.
                            let xv =
                                unsafe { _mm256_loadu_ps(c.x.as_ptr().add(j * cols + base + g)) };
                            *s = _mm256_fmadd_ps(w, xv, *s);
                        }
                    }
                    let dv = _mm256_set1_ps(d);
                    for j in 0..M {
                        acc[j] = _mm256_fmadd_ps(s[j], dv, acc[j]);
                    }
                }
            }
            QFormat::Q4_0 | QFormat::Q4_1 => {
                let mask = _mm_set1_epi8(0x0F);
                for (b, &d) in scales.iter().enumerate() {
                    // SAFETY: block `b` has 16 bytes at `16 * b` within the row.
                    let raw = unsafe { _mm_loadu_si128(qs.as_ptr().add(16 * b) as *const __m128i) };
                    let lo = _mm_and_si128(raw, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
                    let w = [
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))),
                    ];
                    let dv = _mm256_set1_ps(d);
                    let base = 32 * b;
                    for j in 0..M {
                        let xp = c.x.as_ptr();
                        let off = j * cols + base;
                        // SAFETY: input `j` has 32 values from `off` (blocks tile the row).
                        let s = unsafe {
                            let s = _mm256_mul_ps(w[0], _mm256_loadu_ps(xp.add(off)));
                            let s = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xp.add(off + 8)), s);
                            let s = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xp.add(off + 16)), s);
                            _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xp.add(off + 24)), s)
                        };
                        acc[j] = _mm256_fmadd_ps(s, dv, acc[j]);
                        let xsum = c.xsums[j * c.bpr + b];
                        extra[j] += match q.format {
                            QFormat::Q4_0 => -8.0 * d * xsum,
                            _ => q.mins[r * c.bpr + b] * xsum,
                        };
                    }
                }
            }
        }
        for j in 0..M {
            out[j] = hsum(acc[j]) + extra[j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The AVX-512 VNNI kernel on int8-quantized activations: `vpdpbusd` multiplies 64
    //! unsigned weight bytes by 64 signed activation bytes and adds each four products into
    //! one of 16 i32 lanes, so one instruction covers two 32-value blocks (lanes 0-7 the
    //! first, 8-15 the second), which the per-block scales then weight. A 4-bit block's
    //! offset or minimum is folded in at the end as one dot product over the row's blocks.

    // The loops index several per-input arrays (accumulators, offsets, inputs) by `j`.
    #![allow(clippy::needless_range_loop)]

    use super::{QBLOCK, QFormat, RowCtx};
    use std::arch::x86_64::*;

    /// How many rows ahead the weight bytes are prefetched.
    const PREFETCH_ROWS: usize = 4;

    /// One output row for every input of the pass.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI, AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn row_int8(c: &RowCtx<'_>, r: usize, out: &mut [f32]) {
        for_inputs!(row_int8_m, c, r, out)
    }

    /// `a` in lanes 0-7 and `b` in lanes 8-15.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    fn halves(a: f32, b: f32) -> __m512 {
        _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b))
    }

    /// `Σ a[i] · b[i]` over `n` values, 16 lanes at a time.
    ///
    /// # Safety
    /// `a` and `b` must hold `n` values each.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    unsafe fn dot_f32(a: *const f32, b: *const f32, n: usize) -> f32 {
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let k = (n - i).min(16);
            let m: __mmask16 = if k == 16 { 0xFFFF } else { (1u16 << k) - 1 };
            // SAFETY: lanes past `n` are masked off and not read.
            let (x, y) = unsafe {
                (
                    _mm512_maskz_loadu_ps(m, a.add(i)),
                    _mm512_maskz_loadu_ps(m, b.add(i)),
                )
            };
            acc = _mm512_fmadd_ps(x, y, acc);
            i += 16;
        }
        _mm512_reduce_add_ps(acc)
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
    fn row_int8_m<const M: usize>(c: &RowCtx<'_>, r: usize, out: &mut [f32]) {
        let q = c.q;
        let chunks = q.cols / QBLOCK;
        let rq = q.row_qbytes();
        let qs = &q.qs[r * rq..(r + 1) * rq];
        let scales = &q.scales[r * c.bpr..(r + 1) * c.bpr];
        let xq = c.xq.qs.as_ptr();
        let pairs = chunks.div_ceil(2);
        let zero = _mm512_setzero_si512();
        let int8 = matches!(q.format, QFormat::Int8 { .. });
        let mut acc = [_mm512_setzero_ps(); M];
        // Rows are read once, in order: fetch the row PREFETCH_ROWS ahead into the cache
        // while this one computes.
        let ahead = r + PREFETCH_ROWS;
        if ahead < q.rows {
            let base = q.qs.as_ptr().wrapping_add(ahead * rq);
            for off in (0..rq).step_by(64) {
                // A hint only: the address lies in the weight's buffer.
                _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(off) as *const i8);
            }
        }
        // Block pairs; an odd last block goes alone, its upper half zero.
        let mut g = 0;
        while g < chunks {
            let pair = g + 1 < chunks;
            // The weight bytes of blocks g (and g + 1) as unsigned values, and for int8 the
            // lanes whose weight is negative (their activation is negated instead).
            let (w, neg, d0, d1) = match q.format {
                QFormat::Int8 { .. } => {
                    // SAFETY: blocks g (and g + 1) have 32 bytes each at `32 * g`.
                    let w = unsafe {
                        if pair {
                            _mm512_loadu_si512(qs.as_ptr().add(32 * g) as *const _)
                        } else {
                            _mm512_zextsi256_si512(_mm256_loadu_si256(
                                qs.as_ptr().add(32 * g) as *const __m256i
                            ))
                        }
                    };
                    let per_row = c.block != QBLOCK;
                    let d = |b: usize| if per_row { scales[0] } else { scales[b] };
                    let d1 = if pair { d(g + 1) } else { 0.0 };
                    (_mm512_abs_epi8(w), _mm512_movepi8_mask(w), d(g), d1)
                }
                QFormat::Q4_0 | QFormat::Q4_1 => {
                    let m4 = _mm256_set1_epi8(0x0F);
                    let w = if pair {
                        // SAFETY: blocks g and g + 1 have 16 bytes each at `16 * g`.
                        let raw = unsafe {
                            _mm256_loadu_si256(qs.as_ptr().add(16 * g) as *const __m256i)
                        };
                        let lo = _mm256_and_si256(raw, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                        // [low nibbles g, high nibbles g, low g + 1, high g + 1]: the order of
                        // the values in the activations.
                        _mm512_inserti64x4(
                            _mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                            _mm256_permute2x128_si256(lo, hi, 0x31),
                            1,
                        )
                    } else {
                        // SAFETY: block g has 16 bytes at `16 * g`.
                        let raw =
                            unsafe { _mm_loadu_si128(qs.as_ptr().add(16 * g) as *const __m128i) };
                        _mm512_zextsi256_si512(_mm256_and_si256(
                            _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw),
                            m4,
                        ))
                    };
                    let d1 = if pair { scales[g + 1] } else { 0.0 };
                    (w, 0, scales[g], d1)
                }
            };
            // The weight scales of the pair, shared by every input.
            let dw = halves(d0, d1);
            for j in 0..M {
                let xi = j * chunks + g;
                // SAFETY: input `j` has `chunks` blocks of 32 values from `32 * j * chunks`,
                // and `pairs` pair-scale vectors of 16 from `16 * j * pairs`.
                let (x, xs) = unsafe {
                    let x = if pair {
                        _mm512_loadu_si512(xq.add(32 * xi) as *const _)
                    } else {
                        _mm512_zextsi256_si512(
                            _mm256_loadu_si256(xq.add(32 * xi) as *const __m256i),
                        )
                    };
                    let xs =
                        _mm512_loadu_ps(c.xq.pair_scales.as_ptr().add(16 * (j * pairs + g / 2)));
                    (x, xs)
                };
                let x = if int8 {
                    _mm512_mask_sub_epi8(x, neg, zero, x)
                } else {
                    x
                };
                let dot = _mm512_dpbusd_epi32(zero, w, x);
                acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), xs), dw, acc[j]);
            }
            g += 2;
        }
        for j in 0..M {
            let base = j * chunks;
            // The 4-bit offset (-8 · d) or minimum, times each block's activation sum.
            // SAFETY: the row has `chunks` scales and minimums, input `j` `chunks` sums.
            let extra = unsafe {
                let dxs = c.xq.dxsums.as_ptr().add(base);
                match q.format {
                    QFormat::Int8 { .. } => 0.0,
                    QFormat::Q4_0 => -8.0 * dot_f32(scales.as_ptr(), dxs, chunks),
                    QFormat::Q4_1 => dot_f32(q.mins.as_ptr().add(r * c.bpr), dxs, chunks),
                }
            };
            out[j] = _mm512_reduce_add_ps(acc[j]) + extra;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn dense(w: &[f32], rows: usize, cols: usize, x: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * rows];
        for j in 0..m {
            for r in 0..rows {
                y[j * rows + r] = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[j * cols + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    const FORMATS: [QFormat; 4] = [
        QFormat::Int8 { block: 32 },
        QFormat::Int8 { block: usize::MAX },
        QFormat::Q4_0,
        QFormat::Q4_1,
    ];

    #[test]
    fn kernels_match_the_dequantized_product() {
        let (rows, cols) = (37, 96);
        let w = lcg(rows * cols, 1);
        for format in FORMATS {
            let q = QMatrix::quantize(&w, rows, cols, format).expect("quantize");
            let wq = q.dequantize();
            for m in [1, 3, 8, 11] {
                let x = lcg(m * cols, 7 + m as u64);
                let want = dense(&wq, rows, cols, &x, m);
                let simd = if Kernel::detect() == Kernel::Scalar
                    || Kernel::detect() == Kernel::ScalarInt8
                {
                    Kernel::Scalar
                } else {
                    Kernel::Avx2
                };
                for kernel in [Kernel::Scalar, simd] {
                    let mut y = vec![0f32; m * rows];
                    q.matmul_with(&x, m, &mut y, kernel);
                    for (a, b) in y.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{format:?} m={m} {kernel:?}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn int8_activation_kernels_match_the_dequantized_product() {
        let (rows, cols) = (29, 128);
        let w = lcg(rows * cols, 11);
        let fast = Kernel::detect();
        let fast = if fast.quantizes_activations() {
            fast
        } else {
            Kernel::ScalarInt8
        };
        for format in FORMATS {
            let q = QMatrix::quantize(&w, rows, cols, format).expect("quantize");
            let wq = q.dequantize();
            for m in [1, 2, 8, 9] {
                let x = lcg(m * cols, 3 + m as u64);
                // The reference: the dequantized weight times the dequantized int8 input.
                let xi = QuantizedInput::new(&x, cols);
                let xd: Vec<f32> = xi
                    .qs
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f32 * xi.scales[i / QBLOCK])
                    .collect();
                let want = dense(&wq, rows, cols, &xd, m);
                let exact = dense(&wq, rows, cols, &x, m);
                for kernel in [Kernel::ScalarInt8, fast] {
                    let mut y = vec![0f32; m * rows];
                    q.matmul_with(&x, m, &mut y, kernel);
                    for ((a, b), e) in y.iter().zip(&want).zip(&exact) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{format:?} m={m} {kernel:?}: {a} vs {b}"
                        );
                        // And the activation rounding itself stays small.
                        assert!(
                            (a - e).abs() <= 0.05 * (1.0 + e.abs()),
                            "{format:?}: {a} vs exact {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_int8_kernel_agrees_on_odd_and_even_block_counts() {
        // 3 and 5 blocks per row exercise the AVX-512 kernel's lone last block; 4 its pairs.
        let kernels: Vec<Kernel> = Kernel::available()
            .into_iter()
            .filter(|k| k.quantizes_activations())
            .collect();
        for cols in [96, 128, 160] {
            let rows = 19;
            let w = lcg(rows * cols, cols as u64);
            for format in FORMATS {
                let q = QMatrix::quantize(&w, rows, cols, format).expect("quantize");
                for m in [1, 2, 5, 8, 9] {
                    let x = lcg(m * cols, 100 + m as u64);
                    let mut reference = vec![0f32; m * rows];
                    q.matmul_with(&x, m, &mut reference, Kernel::ScalarInt8);
                    for &kernel in &kernels {
                        let mut y = vec![0f32; m * rows];
                        q.matmul_with(&x, m, &mut y, kernel);
                        for (a, b) in y.iter().zip(&reference) {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{format:?} cols={cols} m={m} {kernel:?}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_spinning_pair_rayon_and_one_thread_give_the_same_product() {
        // 1000 x 576 (576,000 multiply-adds per input): split in two by the spinning helper
        // when called from this thread, into rayon tasks (m = 8) or not at all inside a
        // rayon worker, and never in a one-thread pool. Rows are independent, so every way
        // must give the same bits.
        let (rows, cols) = (1000, 576);
        if rayon::current_num_threads() >= 2 && std::env::var_os("LACONIC_NO_SPIN").is_none() {
            assert!(spin::available(), "the helper should serve a test thread");
        }
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("thread pool")
        };
        let (two, one) = (pool(2), pool(1));
        for format in [QFormat::Q4_0, QFormat::Int8 { block: 32 }] {
            let q = QMatrix::quantize(&lcg(rows * cols, 21), rows, cols, format).expect("quantize");
            for m in [1, 8] {
                let x = lcg(m * cols, 22 + m as u64);
                let product = || {
                    let mut y = vec![f32::NAN; m * rows];
                    q.matmul(&x, m, &mut y);
                    y
                };
                let alone = one.install(product);
                assert!(alone.iter().all(|v| v.is_finite()));
                assert_eq!(product(), alone, "{format:?} m={m}: helper split");
                assert_eq!(two.install(product), alone, "{format:?} m={m}: in a worker");
            }
        }
    }

    #[test]
    fn a_product_split_across_threads_equals_one_input_at_a_time() {
        // Large enough to be split into tasks (rows · cols · m ≥ PARALLEL_MIN_MACS), with a
        // last task shorter than the others: every input's output lands in its own row range.
        let (rows, cols, m) = (4099, 256, 5);
        assert!(rows * cols * m >= PARALLEL_MIN_MACS);
        let w = lcg(rows * cols, 11);
        let q = QMatrix::quantize(&w, rows, cols, QFormat::Q4_1).expect("quantize");
        let x = lcg(m * cols, 12);
        for kernel in Kernel::available() {
            let mut y = vec![f32::NAN; m * rows];
            q.matmul_with(&x, m, &mut y, kernel);
            for j in 0..m {
                let mut one = vec![0f32; rows];
                q.matmul_with(&x[j * cols..(j + 1) * cols], 1, &mut one, kernel);
                assert_eq!(
                    &y[j * rows..(j + 1) * rows],
                    &one[..],
                    "{kernel:?} input {j}"
                );
            }
        }
    }

    #[test]
    fn quantization_error_is_bounded_by_the_step() {
        let (rows, cols) = (8, 64);
        let w = lcg(rows * cols, 3);
        for (format, levels) in [
            (QFormat::Int8 { block: 32 }, 127.0),
            (QFormat::Int8 { block: usize::MAX }, 127.0),
            (QFormat::Q4_0, 8.0),
            (QFormat::Q4_1, 15.0),
        ] {
            let q = QMatrix::quantize(&w, rows, cols, format).expect("quantize");
            let back = q.dequantize();
            let block = format.block(cols);
            for (i, (a, b)) in w.iter().zip(&back).enumerate() {
                let chunk = &w[i / block * block..(i / block + 1) * block];
                let range = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
                let step = if format == QFormat::Q4_1 {
                    2.0 * range
                } else {
                    range
                } / levels;
                // Q4_0 maps the largest magnitude to -8, so +max clamps to 7: one full step.
                let bound = if format == QFormat::Q4_0 {
                    step
                } else {
                    step * 0.5
                };
                // Scales stored as f16 add up to 2^-11 relative error on the value.
                let bound = bound + a.abs() / 1024.0;
                assert!(
                    (a - b).abs() <= bound + 1e-6,
                    "{format:?} [{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn ggml_blocks_repack_exactly() {
        // One Q4_1 block: d = 0.5, m = -1, nibbles j and j + 16.
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let q = QMatrix::from_ggml(GgmlType::Q4_1, &b, 1, 32).expect("q4_1");
        let mut want = Vec::new();
        crate::gguf::quant::dequantize_into(GgmlType::Q4_1, &b, &mut want);
        assert_eq!(q.dequantize(), want);
        assert_eq!(q.dequantize()[0], -1.0);
        assert_eq!(q.dequantize()[16], 0.5 * 15.0 - 1.0);
        // A wrong byte count is refused, not misread.
        assert!(QMatrix::from_ggml(GgmlType::Q4_1, &b[..19], 1, 32).is_none());
        assert!(QMatrix::from_ggml(GgmlType::F32, &b, 1, 5).is_none());
    }

    #[test]
    fn permuting_rows_moves_whole_rows() {
        let (rows, cols) = (4, 32);
        let w = lcg(rows * cols, 5);
        let q = QMatrix::quantize(&w, rows, cols, QFormat::Q4_1).expect("quantize");
        let p = q.permute_rows(&[2, 0, 3, 1]);
        let (a, b) = (q.dequantize(), p.dequantize());
        assert_eq!(&b[..cols], &a[2 * cols..3 * cols]);
        assert_eq!(&b[3 * cols..], &a[cols..2 * cols]);
    }

    #[test]
    fn odd_widths_are_refused() {
        assert!(QMatrix::quantize(&[0.0; 40], 1, 40, QFormat::Q4_0).is_none());
        assert!(QMatrix::quantize(&[0.0; 64], 1, 64, QFormat::Int8 { block: 48 }).is_none());
    }
}
