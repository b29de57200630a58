//! The key/value state of one sequence.
//!
//! A [`Kv`] holds, for every layer, the keys before RoPE (after the k-norm),
//! the same keys rotated to their positions, and the values, row by row in
//! slot order, plus each slot's position. Slots are usually in position
//! order, but nothing requires it: attention masks by position, not by slot.
//! Keeping the pre-RoPE keys is what lets a cached document move to another
//! offset; keeping the rotated ones saves re-rotating every key at every step.
//!
//! Cost: `3 * layers * kv_heads * head_dim` values of the model's element
//! type per slot. Appends are amortised
//! O(1) per row (capacity doubles); overwriting scattered slots rewrites the
//! layer's buffers once per call.

use candle_core::{DType, Device, Tensor};

use crate::Result;

/// Growable `(capacity, kv_heads, head_dim)` buffer whose first `len` rows are live.
///
/// Rows are written in place, so a buffer never shares storage with another
/// tensor: construction and [`RowBuffer::try_clone`] copy.
#[derive(Debug)]
pub(crate) struct RowBuffer {
    data: Tensor,
    len: usize,
}

impl RowBuffer {
    fn empty(kv_heads: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            data: Tensor::zeros((0, kv_heads, head_dim), dtype, device)?,
            len: 0,
        })
    }

    fn from_tensor(data: &Tensor) -> Result<Self> {
        let len = data.dim(0)?;
        Ok(Self {
            data: data.copy()?,
            len,
        })
    }

    fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            data: self.view()?.copy()?,
            len: self.len,
        })
    }

    /// The live rows, `(len, kv_heads, head_dim)`; contiguous.
    pub(crate) fn view(&self) -> Result<Tensor> {
        Ok(self.data.narrow(0, 0, self.len)?)
    }

    fn append(&mut self, rows: &Tensor) -> Result<()> {
        let added = rows.dim(0)?;
        let capacity = self.data.dim(0)?;
        if self.len + added > capacity {
            let (_, heads, dim) = self.data.dims3()?;
            let new_capacity = (self.len + added).max(capacity * 2).max(16);
            let grown = Tensor::zeros(
                (new_capacity, heads, dim),
                self.data.dtype(),
                self.data.device(),
            )?;
            grown.slice_set(&self.view()?, 0, 0)?;
            self.data = grown;
        }
        self.data.slice_set(&rows.contiguous()?, 0, self.len)?;
        self.len += added;
        Ok(())
    }

    /// Writes `rows` as `write` planned: overwritten slots first (run by run
    /// in place, or by one gather), then appended ones.
    fn write(&mut self, write: &RowWrite, rows: &Tensor) -> Result<()> {
        if self.len != write.live {
            return Err(crate::ModelError::input(format!(
                "a row write planned over {} live rows met a buffer of {}",
                write.live, self.len
            )));
        }
        let split = write.split;
        if split > 0 {
            let overwritten = rows.narrow(0, 0, split)?.contiguous()?;
            match (&write.runs, &write.gather) {
                (Some(runs), _) => {
                    let mut done = 0;
                    for &(first, len) in runs {
                        self.data
                            .slice_set(&overwritten.narrow(0, done, len)?, 0, first)?;
                        done += len;
                    }
                }
                (None, Some(index)) => {
                    let merged = Tensor::cat(&[&self.view()?, &overwritten], 0)?;
                    self.data = merged.index_select(index, 0)?;
                }
                (None, None) => {
                    return Err(crate::ModelError::input(
                        "a row write with neither runs nor a gather index",
                    ))
                }
            }
        }
        if split < write.slots.len() {
            self.append(&rows.narrow(0, split, write.slots.len() - split)?)?;
        }
        Ok(())
    }
}

/// Where a pass's rows go in every buffer of every layer, worked out once per
/// pass (all buffers of a sequence hold the same live rows): the slots, how
/// many of them overwrite live rows, and how, run by run in place or, when
/// the slots scatter, by one gather over `[live rows ++ new rows]` whose
/// index goes to the device once rather than per buffer and layer.
#[derive(Debug)]
pub(crate) struct RowWrite {
    slots: Vec<usize>,
    /// Live rows the write was planned over.
    live: usize,
    /// Rows before this index overwrite live slots; the rest are appended.
    split: usize,
    /// Runs of consecutive overwritten slots, `(first, len)`.
    runs: Option<Vec<(usize, usize)>>,
    /// The gather index, when `runs` is `None`.
    gather: Option<Tensor>,
}

impl RowWrite {
    /// Plans writing rows to `slots` (overwrites of slots `< live` first,
    /// then appends in order) in buffers of `live` rows on `device`.
    pub(crate) fn new(slots: &[usize], live: usize, device: &Device) -> Result<Self> {
        let split = slots.iter().position(|&s| s >= live).unwrap_or(slots.len());
        let overwritten = &slots[..split];
        let max_runs = if device.is_cpu() {
            MAX_IN_PLACE_RUNS
        } else {
            MAX_IN_PLACE_RUNS_GPU
        };
        let runs = ascending_runs(overwritten, max_runs);
        let gather = match runs {
            Some(_) => None,
            None => {
                let mut index: Vec<u32> = (0..live as u32).collect();
                for (j, &slot) in overwritten.iter().enumerate() {
                    index[slot] = (live + j) as u32;
                }
                Some(Tensor::from_vec(index, live, device)?)
            }
        };
        Ok(Self {
            slots: slots.to_vec(),
            live,
            split,
            runs,
            gather,
        })
    }
}

/// Most runs of consecutive slots written in place one copy each; beyond
/// it, one gather of the whole buffer is cheaper.
const MAX_IN_PLACE_RUNS: usize = 512;

/// The same on a GPU, where each copy is a kernel launch: a recomputed
/// selection of 512 runs cost 1,500 launches a layer (most of Stage II's
/// time), against two for the gather.
const MAX_IN_PLACE_RUNS_GPU: usize = 4;

/// `slots` as `(first, len)` runs of consecutive slots, when they ascend and
/// form at most `max_runs` runs.
fn ascending_runs(slots: &[usize], max_runs: usize) -> Option<Vec<(usize, usize)>> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &s in slots {
        match runs.last_mut() {
            Some((first, len)) if s == *first + *len => *len += 1,
            Some((first, len)) if s < *first + *len => return None,
            _ => {
                if runs.len() == max_runs {
                    return None;
                }
                runs.push((s, 1));
            }
        }
    }
    Some(runs)
}

/// Keys and values of one layer.
#[derive(Debug)]
pub(crate) struct LayerKv {
    pub(crate) k_raw: RowBuffer,
    pub(crate) k: RowBuffer,
    pub(crate) v: RowBuffer,
}

impl LayerKv {
    fn empty(kv_heads: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            k_raw: RowBuffer::empty(kv_heads, head_dim, dtype, device)?,
            k: RowBuffer::empty(kv_heads, head_dim, dtype, device)?,
            v: RowBuffer::empty(kv_heads, head_dim, dtype, device)?,
        })
    }

    fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            k_raw: self.k_raw.try_clone()?,
            k: self.k.try_clone()?,
            v: self.v.try_clone()?,
        })
    }

    pub(crate) fn write(
        &mut self,
        write: &RowWrite,
        k_raw: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<()> {
        self.k_raw.write(write, k_raw)?;
        self.k.write(write, k)?;
        self.v.write(write, v)
    }
}

/// Per-layer KV of one sequence, with the position of every slot.
///
/// Not `Clone`: buffers are written in place, so a copy is a deep copy
/// ([`Kv::try_clone`]) and may fail like any allocation on a device.
#[derive(Debug)]
pub struct Kv {
    pub(crate) positions: Vec<u32>,
    pub(crate) layers: Vec<LayerKv>,
}

impl Kv {
    pub(crate) fn empty(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| LayerKv::empty(kv_heads, head_dim, dtype, device))
            .collect::<Result<_>>()?;
        Ok(Self {
            positions: Vec::new(),
            layers,
        })
    }

    pub(crate) fn from_layers(
        positions: Vec<u32>,
        layers: Vec<(Tensor, Tensor, Tensor)>,
    ) -> Result<Self> {
        let layers = layers
            .into_iter()
            .map(|(k_raw, k, v)| {
                Ok(LayerKv {
                    k_raw: RowBuffer::from_tensor(&k_raw)?,
                    k: RowBuffer::from_tensor(&k)?,
                    v: RowBuffer::from_tensor(&v)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { positions, layers })
    }

    /// An independent deep copy.
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            positions: self.positions.clone(),
            layers: self
                .layers
                .iter()
                .map(LayerKv::try_clone)
                .collect::<Result<_>>()?,
        })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True when no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Position of every slot, in slot order.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// The position a token appended after this sequence gets: one past the largest.
    pub fn next_position(&self) -> u32 {
        self.positions.iter().max().map_or(0, |p| p + 1)
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Keys of `layer` before RoPE, `(len, kv_heads, head_dim)`.
    pub fn k_raw(&self, layer: usize) -> Result<Tensor> {
        self.layer(layer)?.k_raw.view()
    }

    /// Keys of `layer` rotated to their slots' positions, `(len, kv_heads, head_dim)`.
    pub fn k(&self, layer: usize) -> Result<Tensor> {
        self.layer(layer)?.k.view()
    }

    /// Values of `layer`, `(len, kv_heads, head_dim)`.
    pub fn v(&self, layer: usize) -> Result<Tensor> {
        self.layer(layer)?.v.view()
    }

    fn layer(&self, layer: usize) -> Result<&LayerKv> {
        self.layers.get(layer).ok_or_else(|| {
            crate::ModelError::input(format!(
                "layer {layer} out of range: the cache has {} layers",
                self.layers.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer's live rows, flattened.
    fn values(buffer: &RowBuffer) -> Vec<f32> {
        buffer
            .view()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn ascending_slots_split_into_runs_and_anything_else_falls_back() {
        let max = MAX_IN_PLACE_RUNS;
        assert_eq!(
            ascending_runs(&[3, 4, 5, 9, 11, 12], max),
            Some(vec![(3, 3), (9, 1), (11, 2)])
        );
        assert_eq!(ascending_runs(&[3, 4, 5, 9, 11, 12], 2), None);
        assert_eq!(ascending_runs(&[5, 4], max), None);
        assert_eq!(ascending_runs(&[5, 5], max), None);
        let scattered: Vec<usize> = (0..2 * max + 2).step_by(2).collect();
        assert_eq!(ascending_runs(&scattered, max), None);
    }

    #[test]
    fn overwriting_in_place_and_by_gather_give_the_same_rows() {
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 40.0, &dev)
            .unwrap()
            .reshape((10, 2, 2))
            .unwrap();
        let new = Tensor::arange(100f32, 116.0, &dev)
            .unwrap()
            .reshape((4, 2, 2))
            .unwrap();
        let mut in_place = RowBuffer::from_tensor(&base).unwrap();
        let runs = RowWrite::new(&[1, 2, 6, 9], 10, &dev).unwrap();
        assert!(runs.runs.is_some() && runs.gather.is_none());
        in_place.write(&runs, &new).unwrap();
        let mut gathered = RowBuffer::from_tensor(&base).unwrap();
        let descending = RowWrite::new(&[9, 6, 2, 1], 10, &dev).unwrap();
        assert!(descending.runs.is_none() && descending.gather.is_some());
        gathered
            .write(&descending, &new.flip(&[0]).unwrap())
            .unwrap();
        let (a, b) = (values(&in_place), values(&gathered));
        assert_eq!(a, b);
        assert_eq!(&a[4..8], &[100.0, 101.0, 102.0, 103.0]);
        assert_eq!(&a[0..4], &[0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn one_planned_write_overwrites_then_appends_and_refuses_a_buffer_of_another_length() {
        let dev = Device::Cpu;
        let base = Tensor::zeros((3, 1, 2), DType::F32, &dev).unwrap();
        let new = Tensor::arange(1f32, 7.0, &dev)
            .unwrap()
            .reshape((3, 1, 2))
            .unwrap();
        // Slot 1 overwritten, slots 3 and 4 appended.
        let write = RowWrite::new(&[1, 3, 4], 3, &dev).unwrap();
        assert_eq!((write.split, write.live), (1, 3));
        let mut buffer = RowBuffer::from_tensor(&base).unwrap();
        buffer.write(&write, &new).unwrap();
        assert_eq!(
            values(&buffer),
            vec![0., 0., 1., 2., 0., 0., 3., 4., 5., 6.]
        );
        // The buffer now holds 5 rows; the plan was for 3.
        assert!(buffer.write(&write, &new).is_err());
    }
}
