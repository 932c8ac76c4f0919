//! A frozen 2-D weight kept in its GGUF blocks: `[rows, cols]` with each row
//! a whole number of blocks, rows contiguous. Products read it through
//! [`PackedMatrix::dequantize_rows`], a tile at a time, so the f32 form of the
//! whole matrix never exists.

use super::HostTensor;
use super::dequant::{decodes, dequantize};
use peftc_compiler::model::gguf::GgmlType;
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    bytes: Vec<u8>,
}

impl PackedMatrix {
    /// `bytes` holding `rows` rows of `cols` values of type `ty`; `Err` says
    /// what does not fit.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, String> {
        let (per, block_bytes) = ty
            .block()
            .filter(|_| decodes(ty))
            .ok_or_else(|| format!("has type {} which peftc cannot read", ty.name()))?;
        let (per, block_bytes) = (per as usize, block_bytes as usize);
        if cols == 0 || !cols.is_multiple_of(per) {
            return Err(format!(
                "has rows of {cols} values, not a whole number of {}-value {} blocks",
                per,
                ty.name()
            ));
        }
        let row_bytes = cols / per * block_bytes;
        if bytes.len() != rows * row_bytes {
            return Err(format!(
                "holds {} bytes where {rows} rows of {} need {}",
                bytes.len(),
                ty.name(),
                rows * row_bytes
            ));
        }
        Ok(PackedMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            bytes,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes held (what the memory estimate counts).
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Rows `start..start + out.len() / cols` as f32 into `out`.
    pub fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let n = out.len() / self.cols;
        debug_assert!(start + n <= self.rows && out.len() == n * self.cols);
        let bytes = &self.bytes[start * self.row_bytes..(start + n) * self.row_bytes];
        // `new` admitted only types `dequantize` decodes.
        let decoded = dequantize(self.ty, bytes, out);
        debug_assert!(decoded);
    }

    /// The whole matrix as f32 (merges, `base = f32`, backends without packed products).
    pub fn to_dense(&self) -> HostTensor {
        let mut data = vec![0f32; self.rows * self.cols];
        data.par_chunks_mut(self.cols * 64)
            .enumerate()
            .for_each(|(i, chunk)| self.dequantize_rows(i * 64, chunk));
        HostTensor::new(vec![self.rows, self.cols], data)
    }

    /// The same matrix with its rows reordered: row `i` of the result is row
    /// `order[i]` of this one.
    pub fn with_rows(&self, order: &[usize]) -> PackedMatrix {
        let mut bytes = Vec::with_capacity(self.bytes.len());
        for &r in order {
            bytes.extend_from_slice(&self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]);
        }
        PackedMatrix {
            ty: self.ty,
            rows: order.len(),
            cols: self.cols,
            row_bytes: self.row_bytes,
            bytes,
        }
    }

    /// The first non-finite value, if any (checked once at load, a tile at a time).
    pub fn first_non_finite(&self) -> Option<f32> {
        let tile = 64;
        (0..self.rows.div_ceil(tile))
            .into_par_iter()
            .find_map_any(|t| {
                let r0 = t * tile;
                let n = tile.min(self.rows - r0);
                let mut buf = vec![0f32; n * self.cols];
                self.dequantize_rows(r0, &mut buf);
                buf.into_iter().find(|v| !v.is_finite())
            })
    }

    /// `Σ_j w_ij²` per row, `[rows]` (DoRA's base row norms).
    pub fn row_sq_norms(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows];
        out.par_chunks_mut(64).enumerate().for_each(|(t, o)| {
            let mut buf = vec![0f32; o.len() * self.cols];
            self.dequantize_rows(t * 64, &mut buf);
            for (v, row) in o.iter_mut().zip(buf.chunks_exact(self.cols)) {
                *v = row.iter().map(|x| x * x).sum();
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q8_rows(rows: usize, cols: usize) -> PackedMatrix {
        // Row r, block b: d = 1/(r+1), values (j - 16) for j in 0..32.
        let mut bytes = Vec::new();
        for r in 0..rows {
            for _ in 0..cols / 32 {
                bytes.extend(half::f16::from_f32(1.0 / (r + 1) as f32).to_le_bytes());
                bytes.extend((0..32).map(|j| (j as i8 - 16) as u8));
            }
        }
        PackedMatrix::new(GgmlType::Q8_0, rows, cols, bytes).unwrap()
    }

    #[test]
    fn rows_dequantize_where_they_are_and_reorder() {
        let m = q8_rows(5, 64);
        let dense = m.to_dense();
        let mut one = vec![0f32; 64];
        m.dequantize_rows(3, &mut one);
        assert_eq!(&dense.data[3 * 64..4 * 64], &one[..]);
        let re = m.with_rows(&[4, 0]);
        let d2 = re.to_dense();
        assert_eq!(&d2.data[..64], &dense.data[4 * 64..5 * 64]);
        assert_eq!(&d2.data[64..], &dense.data[..64]);
        let norms = m.row_sq_norms();
        let want: f32 = dense.data[..64].iter().map(|v| v * v).sum();
        assert_eq!(norms[0], want);
        assert_eq!(m.first_non_finite(), None);
    }

    #[test]
    fn misshapen_blocks_are_refused() {
        let e = PackedMatrix::new(GgmlType::Q4_0, 2, 48, vec![0; 36]).unwrap_err();
        assert!(
            e.contains("not a whole number of 32-value q4_0 blocks"),
            "{e}"
        );
        let e = PackedMatrix::new(GgmlType::Q4_0, 2, 64, vec![0; 70]).unwrap_err();
        assert!(
            e.contains("holds 70 bytes where 2 rows of q4_0 need 72"),
            "{e}"
        );
        let e = PackedMatrix::new(GgmlType::Q8K, 1, 256, vec![0; 292]).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
