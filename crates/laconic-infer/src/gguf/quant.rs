//! GGML tensor types and their dequantization to f32.
//!
//! Block layouts follow ggml's `ggml-common.h`: a block of 32 (`Q8_0`, `Q4_0`, `Q4_1`) or 256
//! (the k-quants `Q4_K`, `Q5_K`, `Q6_K`) values shares one or two f16 scales. The unit tests
//! here check hand-built blocks; `tests/gguf_quant.rs` checks every type against values that
//! the `gguf` Python package dequantized (see `scripts/make_fixtures.py`).

use half::{bf16, f16};

/// A GGML tensor type laconic knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit, blocks of 32 with one f16 scale.
    Q8_0,
    /// 4-bit, blocks of 32 with one f16 scale, offset 8.
    Q4_0,
    /// 4-bit, blocks of 32 with an f16 scale and an f16 minimum.
    Q4_1,
    /// 4-bit k-quant, super-blocks of 256.
    Q4K,
    /// 5-bit k-quant, super-blocks of 256.
    Q5K,
    /// 6-bit k-quant, super-blocks of 256.
    Q6K,
    /// Any other GGML type id (recognised in the file, not dequantizable here).
    Other(u32),
}

impl GgmlType {
    /// Maps a GGML type id to a type.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }

    /// The name ggml gives the type.
    pub fn name(self) -> String {
        match self {
            Self::F32 => "F32".into(),
            Self::F16 => "F16".into(),
            Self::BF16 => "BF16".into(),
            Self::Q8_0 => "Q8_0".into(),
            Self::Q4_0 => "Q4_0".into(),
            Self::Q4_1 => "Q4_1".into(),
            Self::Q4K => "Q4_K".into(),
            Self::Q5K => "Q5_K".into(),
            Self::Q6K => "Q6_K".into(),
            Self::Other(id) => match id {
                6 => "Q5_0".into(),
                7 => "Q5_1".into(),
                9 => "Q8_1".into(),
                10 => "Q2_K".into(),
                11 => "Q3_K".into(),
                15 => "Q8_K".into(),
                16..=23 => format!("IQ type {id}"),
                _ => format!("ggml type {id}"),
            },
        }
    }

    /// (values per block, bytes per block), or `None` for a type laconic cannot read.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 | Self::BF16 => Some((1, 2)),
            Self::Q8_0 => Some((32, 34)),
            Self::Q4_0 => Some((32, 18)),
            Self::Q4_1 => Some((32, 20)),
            Self::Q4K => Some((256, 144)),
            Self::Q5K => Some((256, 176)),
            Self::Q6K => Some((256, 210)),
            Self::Other(_) => None,
        }
    }

    /// Bytes that `n` values of this type occupy, if `n` is a whole number of blocks.
    pub fn byte_size(self, n: usize) -> Option<usize> {
        let (block, bytes) = self.block_layout()?;
        n.is_multiple_of(block).then(|| n / block * bytes)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `data` (a whole number of blocks of `ty`) into `out`, which it extends.
///
/// Returns `false` when the type is not one laconic can read.
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut Vec<f32>) -> bool {
    let Some((_, bytes)) = ty.block_layout() else {
        return false;
    };
    match ty {
        GgmlType::F32 => out.extend(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        GgmlType::F16 => out.extend(
            data.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GgmlType::BF16 => out.extend(
            data.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GgmlType::Q8_0 => data.chunks_exact(bytes).for_each(|b| {
            let d = f16_at(b, 0);
            out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
        }),
        GgmlType::Q4_0 => data.chunks_exact(bytes).for_each(|b| {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as i32 - 8) as f32));
            out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
        }),
        GgmlType::Q4_1 => data.chunks_exact(bytes).for_each(|b| {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..20];
            out.extend(qs.iter().map(|&q| d * (q & 0x0F) as f32 + m));
            out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
        }),
        GgmlType::Q4K => data.chunks_exact(bytes).for_each(|b| dequant_q4k(b, out)),
        GgmlType::Q5K => data.chunks_exact(bytes).for_each(|b| dequant_q5k(b, out)),
        GgmlType::Q6K => data.chunks_exact(bytes).for_each(|b| dequant_q6k(b, out)),
        GgmlType::Other(_) => return false,
    }
    true
}

/// The 6-bit scale and minimum of sub-block `j` (of 8) packed in the 12 bytes `q`.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let d = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (d as f32, m as f32)
    }
}

/// `Q4_K`: d, dmin (f16), scales[12], qs[128].
fn dequant_q4k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        out.extend(q.iter().map(|&x| d1 * (x & 0x0F) as f32 - m1));
        out.extend(q.iter().map(|&x| d2 * (x >> 4) as f32 - m2));
    }
}

/// `Q5_K`: d, dmin (f16), scales[12], qh[32], qs[128].
fn dequant_q5k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (chunk, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        out.extend(q.iter().zip(qh).map(|(&x, &h)| {
            let hi = if h & u1 != 0 { 16 } else { 0 };
            d1 * ((x & 0x0F) + hi) as f32 - m1
        }));
        out.extend(q.iter().zip(qh).map(|(&x, &h)| {
            let hi = if h & u2 != 0 { 16 } else { 0 };
            d2 * ((x >> 4) + hi) as f32 - m2
        }));
    }
}

/// `Q6_K`: ql[128], qh[64], scales[16] (i8), d (f16).
fn dequant_q6k(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 208);
    let start = out.len();
    out.resize(start + 256, 0.0);
    let y = &mut out[start..];
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block() {
        let mut b = f16b(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = Vec::new();
        assert!(dequantize_into(GgmlType::Q8_0, &b, &mut out));
        let expected: Vec<f32> = (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn q4_0_and_q4_1_nibble_order() {
        // Low nibbles are the first 16 values, high nibbles the last 16.
        let qs: Vec<u8> = (0..16).map(|i| (i as u8) | ((15 - i as u8) << 4)).collect();
        let mut b = f16b(2.0).to_vec();
        b.extend(&qs);
        let mut out = Vec::new();
        dequantize_into(GgmlType::Q4_0, &b, &mut out);
        assert_eq!(out[0], 2.0 * -8.0);
        assert_eq!(out[15], 2.0 * 7.0);
        assert_eq!(out[16], 2.0 * 7.0);
        assert_eq!(out[31], 2.0 * -8.0);
        let mut b = f16b(2.0).to_vec();
        b.extend(f16b(-1.0));
        b.extend(&qs);
        let mut out = Vec::new();
        dequantize_into(GgmlType::Q4_1, &b, &mut out);
        assert_eq!(out[1], 2.0 * 1.0 - 1.0);
        assert_eq!(out[17], 2.0 * 14.0 - 1.0);
    }

    #[test]
    fn sizes_and_unknown_types() {
        assert_eq!(GgmlType::Q4K.byte_size(512), Some(288));
        assert_eq!(GgmlType::Q4_0.byte_size(33), None);
        assert_eq!(GgmlType::from_id(11).name(), "Q3_K");
        assert!(!dequantize_into(
            GgmlType::from_id(11),
            &[0; 110],
            &mut Vec::new()
        ));
    }
}
