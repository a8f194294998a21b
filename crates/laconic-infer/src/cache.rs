//! The key/value cache: a first-class type owned by the caller.
//!
//! Each layer keeps its keys and values as `[batch, kv_heads, entries, head_dim]` tensors,
//! already rotated at their original positions, and records the original position of every
//! kept entry. Nothing here decides what to keep: eviction policies (StreamingLLM windows,
//! H2O, SnapKV, R-KV) act on the cache between forward passes through [`LayerCache::retain`],
//! so they slot in without touching the model. Positions keep counting from
//! [`KvCache::next_position`] however many entries were dropped, so rotary phases stay right.

use burn::prelude::*;

/// Keys, values and original positions of one layer.
///
/// Every KV head of every sequence in the batch (a *lane*: lane `row * kv_heads + head`)
/// holds the same number of entries, but eviction ([`LayerCache::retain_per_head`],
/// [`LayerCache::retain_lanes`]) may keep different positions in different lanes, so that the
/// sequences of a batch each keep what a policy would keep for them alone; positions are
/// recorded per lane.
///
/// Keys and values live in buffers `[batch, kv_heads, capacity, head_dim]` with room beyond
/// the kept entries, so that appending a token writes it in place instead of copying the whole
/// cache (as `Tensor::cat` would, every token); [`LayerCache::keys`] and
/// [`LayerCache::values`] are views of the kept prefix, which the decoder's attention reads
/// through strided matrix products. Under autodiff the buffers hold exactly the kept entries.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
    /// Entries in use at the front of the buffers' third axis.
    len: usize,
    /// KV heads per sequence (0 before the first append).
    kv_heads: usize,
    /// `positions[lane][i]`: original position of entry `i` of lane `row * kv_heads + head`.
    positions: Vec<Vec<usize>>,
}

/// Room left after the kept entries when a buffer is (re)allocated: a quarter more, at least
/// 64 entries, so a growing cache is copied about once per quarter of its length and an
/// evicting one (budget + buffer) not at all between evictions.
fn slack(len: usize) -> usize {
    (len / 4).max(64)
}

/// The first `len` entries of a buffer, as a view.
fn prefix(t: &Tensor<4>, len: usize) -> Tensor<4> {
    let [b, h, cap, d] = t.dims();
    if cap == len {
        t.clone()
    } else {
        t.clone().slice([0..b, 0..h, 0..len, 0..d])
    }
}

/// A buffer holding `entries` `[b, h, len, d]` with room for more, where writing in place
/// pays (not under autodiff, where the entries are kept as they are).
fn with_room(entries: Tensor<4>) -> Tensor<4> {
    let [b, h, len, d] = entries.dims();
    let device = entries.device();
    if device.is_autodiff() {
        return entries;
    }
    let cap = len + slack(len);
    Tensor::<4>::zeros([b, h, cap, d], &device).slice_assign([0..b, 0..h, 0..len, 0..d], entries)
}

impl LayerCache {
    /// Appends keys and values `[b, kv_heads, s, head_dim]` at `positions` (`s` of them) and
    /// returns the whole cache of the layer, old entries first (views of the buffers: drop
    /// them before the next append, or that append copies the buffers).
    pub fn append(
        &mut self,
        keys: Tensor<4>,
        values: Tensor<4>,
        positions: &[usize],
    ) -> (Tensor<4>, Tensor<4>) {
        debug_assert_eq!(keys.dims()[2], positions.len());
        let [b, heads, s, d] = keys.dims();
        let len = self.len;
        let (k, v) = match (self.keys.take(), self.values.take()) {
            (Some(k0), Some(v0)) if k0.dims()[2] >= len + s => {
                // Room left: write in place (the buffer is not shared once last step's views
                // are gone).
                let at = [0..b, 0..heads, len..len + s, 0..d];
                (
                    k0.slice_assign(at.clone(), keys),
                    v0.slice_assign(at, values),
                )
            }
            (Some(k0), Some(v0)) => {
                let k = Tensor::cat(vec![prefix(&k0, len), keys], 2);
                let v = Tensor::cat(vec![prefix(&v0, len), values], 2);
                (with_room(k), with_room(v))
            }
            _ => (with_room(keys), with_room(values)),
        };
        self.len = len + s;
        let out = (prefix(&k, self.len), prefix(&v, self.len));
        self.keys = Some(k);
        self.values = Some(v);
        self.kv_heads = heads;
        self.positions.resize(b * heads, Vec::new());
        for p in &mut self.positions {
            p.extend_from_slice(positions);
        }
        out
    }

    /// Number of kept entries (per KV head; every head holds the same number).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the layer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of KV heads per sequence (0 before the first append).
    pub fn num_heads(&self) -> usize {
        self.kv_heads
    }

    /// Sequences in the batch (0 before the first append).
    pub fn batch(&self) -> usize {
        self.positions.len() / self.kv_heads.max(1)
    }

    /// Number of lanes: KV heads times sequences.
    pub fn lanes(&self) -> usize {
        self.positions.len()
    }

    /// Original positions of the entries of KV head 0 of the first sequence, in cache order
    /// (the same for every lane unless a policy evicted per lane; see
    /// [`LayerCache::lane_positions`]).
    pub fn positions(&self) -> &[usize] {
        self.positions.first().map_or(&[], Vec::as_slice)
    }

    /// Original positions of the entries of KV head `head` of the first sequence, in cache
    /// order.
    pub fn head_positions(&self, head: usize) -> &[usize] {
        &self.positions[head]
    }

    /// Original positions of the entries of lane `lane` (`row * kv_heads + head`), in cache
    /// order.
    pub fn lane_positions(&self, lane: usize) -> &[usize] {
        &self.positions[lane]
    }

    /// The cached keys `[b, kv_heads, len, head_dim]`, if any (a view of the buffer).
    pub fn keys(&self) -> Option<Tensor<4>> {
        self.keys.as_ref().map(|t| prefix(t, self.len))
    }

    /// The cached values `[b, kv_heads, len, head_dim]`, if any (a view of the buffer).
    pub fn values(&self) -> Option<Tensor<4>> {
        self.values.as_ref().map(|t| prefix(t, self.len))
    }

    /// Keeps only the entries at `indices` (cache order, strictly ascending) in every head.
    ///
    /// # Panics
    /// If an index is out of range or the indices are not strictly ascending.
    pub fn retain(&mut self, indices: &[usize]) {
        let heads = vec![indices.to_vec(); self.num_heads()];
        self.retain_per_head(&heads);
    }

    /// Keeps, in each KV head `h` of every sequence, only the entries at `per_head[h]`
    /// (cache order, strictly ascending). Every head must keep the same number of entries.
    ///
    /// # Panics
    /// If the heads keep different counts, an index is out of range, or indices are not
    /// strictly ascending.
    pub fn retain_per_head(&mut self, per_head: &[Vec<usize>]) {
        assert_eq!(
            per_head.len(),
            self.num_heads(),
            "retain: one index list per KV head"
        );
        let lanes: Vec<Vec<usize>> = (0..self.batch())
            .flat_map(|_| per_head.iter().cloned())
            .collect();
        self.retain_lanes(&lanes);
    }

    /// Keeps, in each lane `row * kv_heads + head`, only the entries at `per_lane[lane]`
    /// (cache order, strictly ascending): each sequence of the batch keeps its own entries.
    /// Every lane must keep the same number of entries.
    ///
    /// # Panics
    /// If the lanes keep different counts, an index is out of range, or indices are not
    /// strictly ascending.
    pub fn retain_lanes(&mut self, per_lane: &[Vec<usize>]) {
        let len = self.len();
        assert_eq!(
            per_lane.len(),
            self.lanes(),
            "retain: one index list per lane"
        );
        let keep = per_lane.first().map_or(0, Vec::len);
        for idx in per_lane {
            assert_eq!(
                idx.len(),
                keep,
                "retain: every lane must keep the same number of entries"
            );
            assert!(
                idx.windows(2).all(|w| w[0] < w[1]),
                "retain: indices must be strictly ascending"
            );
            assert!(
                idx.last().is_none_or(|&i| i < len),
                "retain: index out of range"
            );
        }
        if keep == len {
            return;
        }
        for (pos, idx) in self.positions.iter_mut().zip(per_lane) {
            *pos = idx.iter().map(|&i| pos[i]).collect();
        }
        self.len = keep;
        let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) else {
            return;
        };
        if keep == 0 {
            return;
        }
        let [b, heads, _, d] = k.dims();
        let device = k.device();
        // The kept entries go back into the front of the same buffers (in place, as appends
        // do), so an eviction allocates nothing beyond the picked entries; a buffer with more
        // spare room than a fresh one would have (SnapKV halving a long prompt) is replaced.
        let compact = |buf: Tensor<4>, pick: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let picked = pick(prefix(&buf, len));
            if device.is_autodiff() || buf.dims()[2] > keep + slack(keep) {
                with_room(picked)
            } else {
                buf.slice_assign([0..b, 0..heads, 0..keep, 0..d], picked)
            }
        };
        let same = per_lane.windows(2).all(|w| w[0] == w[1]);
        if same {
            let idx: Vec<i32> = per_lane[0].iter().map(|&i| i as i32).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [keep]), &device);
            let pick = |t: Tensor<4>| t.select(2, idx.clone());
            self.keys = Some(compact(k, &pick));
            self.values = Some(compact(v, &pick));
        } else {
            // Per-lane gather: index [b, heads, keep, d], each row repeating its entry index.
            let mut idx = Vec::with_capacity(b * heads * keep * d);
            for lane in per_lane {
                for &i in lane {
                    idx.extend(std::iter::repeat_n(i as i32, d));
                }
            }
            let idx =
                Tensor::<4, Int>::from_data(TensorData::new(idx, [b, heads, keep, d]), &device);
            let pick = |t: Tensor<4>| t.gather(2, idx.clone());
            self.keys = Some(compact(k, &pick));
            self.values = Some(compact(v, &pick));
        }
    }

    /// Keeps only the sequences at batch rows `rows` (strictly ascending), in that order: a
    /// batch drops the sequences that finished.
    ///
    /// # Panics
    /// If a row is out of range or the rows are not strictly ascending.
    pub fn retain_rows(&mut self, rows: &[usize]) {
        let batch = self.batch();
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]) && rows.last().is_none_or(|&r| r < batch),
            "retain_rows: rows must be strictly ascending and below the batch size"
        );
        if rows.len() == batch {
            return;
        }
        let heads = self.kv_heads;
        self.positions = rows
            .iter()
            .flat_map(|&r| self.positions[r * heads..(r + 1) * heads].iter().cloned())
            .collect();
        let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        let device = k.device();
        let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
        self.keys = Some(k.select(0, idx.clone()));
        self.values = Some(v.select(0, idx));
    }

    /// Repeats a batch-1 cache `n` times along the batch, so that `n` sequences continue
    /// from one shared prompt.
    pub fn repeat_batch(&mut self, n: usize) {
        let len = self.len;
        let repeat = |t: Option<Tensor<4>>| t.map(|t| with_room(prefix(&t, len).repeat_dim(0, n)));
        self.keys = repeat(self.keys.take());
        self.values = repeat(self.values.take());
        let one = self.positions.clone();
        self.positions = (0..n).flat_map(|_| one.iter().cloned()).collect();
    }

    /// Bytes held by the kept keys and values (the buffers' spare room, at most a quarter
    /// more or 64 entries, is not counted: it is what an implementation with in-place
    /// appends needs, not what the policy keeps).
    pub fn bytes(&self) -> usize {
        let size = |t: &Option<Tensor<4>>| {
            t.as_ref()
                .map(|t| {
                    let [b, h, _, d] = t.dims();
                    b * h * self.len * d * t.dtype().size()
                })
                .unwrap_or(0)
        };
        size(&self.keys) + size(&self.values)
    }
}

/// The cache of a whole model: one [`LayerCache`] per layer, plus the next position.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    next_position: usize,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); num_layers],
            next_position: 0,
        }
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The cache of layer `i`.
    pub fn layer(&self, i: usize) -> &LayerCache {
        &self.layers[i]
    }

    /// The cache of layer `i`, mutably (for eviction policies).
    pub fn layer_mut(&mut self, i: usize) -> &mut LayerCache {
        &mut self.layers[i]
    }

    /// All layers, mutably.
    pub fn layers_mut(&mut self) -> &mut [LayerCache] {
        &mut self.layers
    }

    /// Position the next token will take: tokens seen so far, evicted or not.
    pub fn next_position(&self) -> usize {
        self.next_position
    }

    /// Records that `n` tokens were consumed by a forward pass.
    pub fn advance(&mut self, n: usize) {
        self.next_position += n;
    }

    /// Entries kept in the largest layer.
    pub fn len(&self) -> usize {
        self.layers.iter().map(LayerCache::len).max().unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by all layers.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Sequences in the batch (0 before the first forward pass).
    pub fn batch(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::batch)
    }

    /// Repeats a batch-1 cache `n` times along the batch (see [`LayerCache::repeat_batch`]).
    pub fn repeat_batch(&mut self, n: usize) {
        self.layers.iter_mut().for_each(|l| l.repeat_batch(n));
    }

    /// Keeps only the sequences at batch rows `rows` in every layer (see
    /// [`LayerCache::retain_rows`]).
    pub fn retain_rows(&mut self, rows: &[usize]) {
        self.layers.iter_mut().for_each(|l| l.retain_rows(rows));
    }

    /// Forgets every token at position `to` or later, as if they had never been fed.
    pub fn rewind(&mut self, to: usize) {
        if to >= self.next_position {
            return;
        }
        for layer in &mut self.layers {
            let keep: Vec<Vec<usize>> = (0..layer.lanes())
                .map(|lane| {
                    let pos = layer.lane_positions(lane);
                    (0..pos.len()).filter(|&i| pos[i] < to).collect()
                })
                .collect();
            // Positions grow along the cache, so every lane drops the same count from its end.
            layer.retain_lanes(&keep);
        }
        self.next_position = to;
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        let n = self.layers.len();
        *self = Self::new(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(values: &[f32], device: &Device) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [1, 1, values.len(), 1]),
            device,
        )
    }

    fn read(t: &Tensor<4>) -> Vec<f32> {
        t.clone().into_data().try_into_vec().unwrap()
    }

    #[test]
    fn append_retain_and_positions() {
        let device = Device::flex();
        let mut cache = KvCache::new(2);
        for round in 0..2 {
            let layer = cache.layer_mut(0);
            let (k, _) = layer.append(
                entries(&[0., 1., 2.], &device),
                entries(&[10., 11., 12.], &device),
                &[0, 1, 2],
            );
            assert_eq!(read(&k), [0., 1., 2.]);
            let (k, v) = layer.append(entries(&[3.], &device), entries(&[13.], &device), &[3]);
            assert_eq!(read(&k), [0., 1., 2., 3.]);
            assert_eq!(read(&v), [10., 11., 12., 13.]);
            assert_eq!(layer.bytes(), 2 * 4 * 4);
            layer.retain(&[0, 3]);
            assert_eq!(layer.positions(), [0, 3]);
            assert_eq!(read(&layer.keys().unwrap()), [0., 3.]);
            assert_eq!(read(&layer.values().unwrap()), [10., 13.]);
            cache.advance(4);
            assert_eq!(cache.next_position(), 4);
            assert_eq!(cache.len(), 2);
            assert_eq!(cache.bytes(), 2 * 2 * 4);
            if round == 0 {
                assert_eq!(cache.layer(0).num_heads(), 1);
                cache.rewind(3);
                assert_eq!(cache.layer(0).positions(), [0], "position 3 is forgotten");
                assert_eq!(cache.next_position(), 3);
                cache.reset();
                assert!(cache.is_empty() && cache.next_position() == 0);
            }
        }
    }

    #[test]
    fn per_head_retain_keeps_each_heads_own_entries() {
        let device = Device::flex();
        // Two heads, four entries, head_dim 2: head h entry i holds (10h + i, -(10h + i)).
        let mut data = Vec::new();
        for h in 0..2 {
            for i in 0..4 {
                let x = (10 * h + i) as f32;
                data.extend([x, -x]);
            }
        }
        let k = Tensor::<4>::from_data(TensorData::new(data.clone(), [1, 2, 4, 2]), &device);
        let v = Tensor::<4>::from_data(TensorData::new(data, [1, 2, 4, 2]), &device);
        let mut layer = LayerCache::default();
        layer.append(k, v, &[5, 6, 7, 8]);
        layer.retain_per_head(&[vec![0, 3], vec![1, 2]]);
        assert_eq!(layer.head_positions(0), [5, 8]);
        assert_eq!(layer.head_positions(1), [6, 7]);
        assert_eq!(
            read(&layer.keys().unwrap()),
            [0., -0., 3., -3., 11., -11., 12., -12.]
        );
        assert_eq!(
            read(&layer.values().unwrap()),
            [0., -0., 3., -3., 11., -11., 12., -12.]
        );
        assert_eq!(layer.len(), 2);
    }

    #[test]
    fn lanes_keep_their_own_entries_and_finished_rows_leave() {
        let device = Device::flex();
        // Three sequences, two heads, three entries, head_dim 1: row r head h entry i holds
        // 100r + 10h + i.
        let data: Vec<f32> = (0..3)
            .flat_map(|r| {
                (0..2).flat_map(move |h| (0..3).map(move |i| (100 * r + 10 * h + i) as f32))
            })
            .collect();
        let t = || Tensor::<4>::from_data(TensorData::new(data.clone(), [3, 2, 3, 1]), &device);
        let mut layer = LayerCache::default();
        layer.append(t(), t(), &[4, 5, 6]);
        assert_eq!((layer.batch(), layer.lanes(), layer.num_heads()), (3, 6, 2));
        // Each lane keeps two entries of its own choosing.
        let keep = [[0, 1], [1, 2], [0, 2], [0, 1], [1, 2], [0, 2]];
        layer.retain_lanes(&keep.map(|k| k.to_vec()));
        assert_eq!(layer.lane_positions(1), [5, 6]);
        assert_eq!(layer.lane_positions(2), [4, 6]);
        assert_eq!(
            read(&layer.keys().unwrap()),
            [
                0., 1., 11., 12., 100., 102., 110., 111., 201., 202., 210., 212.
            ]
        );
        // The middle sequence finishes: rows 0 and 2 stay, with their positions.
        layer.retain_rows(&[0, 2]);
        assert_eq!((layer.batch(), layer.lanes(), layer.len()), (2, 4, 2));
        assert_eq!(layer.lane_positions(2), [5, 6]);
        assert_eq!(layer.lane_positions(3), [4, 6]);
        assert_eq!(
            read(&layer.values().unwrap()),
            [0., 1., 11., 12., 201., 202., 210., 212.]
        );
        // Appending after a row left writes every remaining row.
        let more = || {
            Tensor::<4>::from_data(
                TensorData::new(vec![-1.0f32, -2., -3., -4.], [2, 2, 1, 1]),
                &device,
            )
        };
        layer.append(more(), more(), &[7]);
        assert_eq!(
            read(&layer.keys().unwrap()),
            [0., 1., -1., 11., 12., -2., 201., 202., -3., 210., 212., -4.]
        );
        assert_eq!(layer.lane_positions(3), [4, 6, 7]);
    }

    #[test]
    fn appends_in_place_grow_past_the_spare_room_and_leave_clones_alone() {
        let device = Device::flex();
        let mut layer = LayerCache::default();
        let mut snapshot = None;
        // 300 one-entry appends: the buffer is reallocated several times (room for a quarter
        // more, at least 64) and written in place in between.
        for i in 0..300 {
            let (k, v) = layer.append(
                entries(&[i as f32], &device),
                entries(&[-(i as f32)], &device),
                &[i],
            );
            assert_eq!(k.dims()[2], i + 1);
            assert_eq!(read(&v)[i], -(i as f32));
            if i == 99 {
                snapshot = Some(layer.clone());
            }
        }
        let want: Vec<f32> = (0..300).map(|i| i as f32).collect();
        assert_eq!(read(&layer.keys().unwrap()), want);
        assert_eq!(layer.len(), 300);
        // Only kept entries count, not the spare room.
        assert_eq!(layer.bytes(), 2 * 300 * 4);
        // A clone taken earlier still holds its own 100 entries (copy on write).
        let snapshot = snapshot.unwrap();
        assert_eq!(read(&snapshot.keys().unwrap()), want[..100].to_vec());
        // Eviction then appending again keeps the order.
        layer.retain(&[0, 150, 299]);
        layer.append(entries(&[7.0], &device), entries(&[-7.0], &device), &[300]);
        assert_eq!(read(&layer.keys().unwrap()), [0., 150., 299., 7.]);
        assert_eq!(read(&layer.values().unwrap()), [-0., -150., -299., -7.]);
        assert_eq!(layer.positions(), [0, 150, 299, 300]);
    }
}
