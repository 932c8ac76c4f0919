//! A frozen 2-D weight `[rows, cols]` kept in quantized codes: a GGUF's
//! blocks as the file holds them, or a full-precision checkpoint quantized at
//! load (`model "DIR" quantize nf4 | int8`, [`Nf4Matrix`], [`Int8Matrix`]).
//! Products read it through [`PackedMatrix::dequantize_rows`], a tile at a
//! time, so the f32 form of the whole matrix never exists.

use super::dequant::{decodes, dequantize};
use super::{HostTensor, Int8Matrix, NF4_CODE, Nf4Matrix, Resident};
use peftc_compiler::model::gguf::GgmlType;
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    codes: Codes,
    /// Its uploads to GPU backends (`kernels::cube::packed`).
    resident: Resident,
}

/// How a matrix's values are coded, as a device kernel decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GGUF blocks of this type, rows contiguous.
    Ggml(GgmlType),
    /// NF4 nibbles (high nibble first), one scale per 64-value block.
    Nf4,
    /// i8 codes, one scale per row, `q · scale / 127`.
    Int8,
}

/// What a device needs to decode a [`PackedMatrix`]: its code bytes as
/// stored, the bytes per row (GGUF; `cols` otherwise), and the f32 side
/// table: NF4's 16 code values then each block's scale (the double
/// quantization undone once on the host, so that both sides use the same
/// f32 scales); Int8's row scales; empty for GGUF, whose scales are in the
/// blocks.
#[derive(Debug)]
pub struct DeviceForm<'a> {
    pub coding: Coding,
    pub bytes: std::borrow::Cow<'a, [u8]>,
    pub row_bytes: usize,
    pub aux: Vec<f32>,
}

/// How the values are coded.
#[derive(Debug, Clone, PartialEq)]
enum Codes {
    /// GGUF blocks, each row a whole number of them, rows contiguous.
    Ggml {
        ty: GgmlType,
        row_bytes: usize,
        bytes: Vec<u8>,
    },
    Nf4(Nf4Matrix),
    Int8(Int8Matrix),
}

impl PackedMatrix {
    /// `bytes` holding `rows` rows of `cols` values of GGUF type `ty`; `Err`
    /// says what does not fit.
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
            rows,
            cols,
            codes: Codes::Ggml {
                ty,
                row_bytes,
                bytes,
            },
            resident: Resident::default(),
        })
    }

    fn coded(rows: usize, cols: usize, codes: Codes) -> PackedMatrix {
        PackedMatrix {
            rows,
            cols,
            codes,
            resident: Resident::default(),
        }
    }

    /// The codes as a device kernel reads them.
    pub fn device_form(&self) -> DeviceForm<'_> {
        use std::borrow::Cow;
        match &self.codes {
            Codes::Ggml {
                ty,
                row_bytes,
                bytes,
            } => DeviceForm {
                coding: Coding::Ggml(*ty),
                bytes: Cow::Borrowed(bytes),
                row_bytes: *row_bytes,
                aux: Vec::new(),
            },
            Codes::Nf4(m) => DeviceForm {
                coding: Coding::Nf4,
                bytes: Cow::Borrowed(m.parts().0),
                row_bytes: self.cols / 2,
                aux: NF4_CODE.iter().copied().chain(m.block_scales()).collect(),
            },
            Codes::Int8(m) => {
                let (q, scale) = m.parts();
                DeviceForm {
                    coding: Coding::Int8,
                    bytes: Cow::Owned(q.iter().map(|&v| v as u8).collect()),
                    row_bytes: self.cols,
                    aux: scale.to_vec(),
                }
            }
        }
    }

    /// The matrix's copies on devices.
    pub fn resident(&self) -> &Resident {
        &self.resident
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

    /// The coding's name as `peftc compile` shows it (`q4_1`, `nf4`, `int8`).
    pub fn format(&self) -> String {
        match &self.codes {
            Codes::Ggml { ty, .. } => ty.name(),
            Codes::Nf4(_) => "nf4".into(),
            Codes::Int8(_) => "int8".into(),
        }
    }

    /// The NF4 codes, if this matrix holds them.
    pub fn nf4(&self) -> Option<&Nf4Matrix> {
        match &self.codes {
            Codes::Nf4(m) => Some(m),
            Codes::Ggml { .. } | Codes::Int8(_) => None,
        }
    }

    /// Bytes held (what the memory estimate counts).
    pub fn byte_len(&self) -> usize {
        match &self.codes {
            Codes::Ggml { bytes, .. } => bytes.len(),
            Codes::Nf4(m) => m.byte_len(),
            Codes::Int8(m) => m.byte_len(),
        }
    }

    /// The GGUF blocks as stored: type, bytes per row, every row's bytes
    /// (`None` for NF4 and int8 codes).
    pub fn ggml_blocks(&self) -> Option<(GgmlType, usize, &[u8])> {
        match &self.codes {
            Codes::Ggml {
                ty,
                row_bytes,
                bytes,
            } => Some((*ty, *row_bytes, bytes)),
            Codes::Nf4(_) | Codes::Int8(_) => None,
        }
    }

    /// Rows `start..start + out.len() / cols` as f32 into `out`.
    pub fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let n = out.len() / self.cols;
        debug_assert!(start + n <= self.rows && out.len() == n * self.cols);
        match &self.codes {
            Codes::Ggml {
                ty,
                row_bytes,
                bytes,
            } => {
                let bytes = &bytes[start * row_bytes..(start + n) * row_bytes];
                // `new` admitted only types `dequantize` decodes.
                let decoded = dequantize(*ty, bytes, out);
                debug_assert!(decoded);
            }
            Codes::Nf4(m) => m.dequantize_rows(start, out),
            Codes::Int8(m) => m.dequantize_rows(start, out),
        }
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
    /// `order[i]` of this one. `None` for NF4, whose scales are shared across
    /// rows (only GGUF blocks are reordered, by the GGUF loader).
    pub fn with_rows(&self, order: &[usize]) -> Option<PackedMatrix> {
        match &self.codes {
            Codes::Ggml {
                ty,
                row_bytes,
                bytes,
            } => {
                let mut out = Vec::with_capacity(bytes.len());
                for &r in order {
                    out.extend_from_slice(&bytes[r * row_bytes..(r + 1) * row_bytes]);
                }
                Some(PackedMatrix::coded(
                    order.len(),
                    self.cols,
                    Codes::Ggml {
                        ty: *ty,
                        row_bytes: *row_bytes,
                        bytes: out,
                    },
                ))
            }
            Codes::Nf4(_) | Codes::Int8(_) => None,
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

impl From<Nf4Matrix> for PackedMatrix {
    fn from(m: Nf4Matrix) -> PackedMatrix {
        let [rows, cols] = m.shape();
        PackedMatrix::coded(rows, cols, Codes::Nf4(m))
    }
}

impl From<Int8Matrix> for PackedMatrix {
    fn from(m: Int8Matrix) -> PackedMatrix {
        let [rows, cols] = m.shape();
        PackedMatrix::coded(rows, cols, Codes::Int8(m))
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
        let re = m.with_rows(&[4, 0]).unwrap();
        let d2 = re.to_dense();
        assert_eq!(&d2.data[..64], &dense.data[4 * 64..5 * 64]);
        assert_eq!(&d2.data[64..], &dense.data[..64]);
        let norms = m.row_sq_norms();
        let want: f32 = dense.data[..64].iter().map(|v| v * v).sum();
        assert_eq!(norms[0], want);
        assert_eq!(m.first_non_finite(), None);
    }

    #[test]
    fn nf4_and_int8_read_as_their_own_matrices() {
        let data: Vec<f32> = (0..4 * 128)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let t = HostTensor::new(vec![4, 128], data);
        let nf4 = Nf4Matrix::quantize(&t).unwrap();
        let whole = |f: &dyn Fn(&mut [f32])| {
            let mut out = vec![0f32; 4 * 128];
            f(&mut out);
            out
        };
        let nf4_values = whole(&|o| nf4.dequantize_rows(0, o));
        let p = PackedMatrix::from(nf4.clone());
        assert_eq!(
            (p.shape(), p.format(), p.byte_len()),
            ([4, 128], "nf4".to_string(), nf4.byte_len())
        );
        assert_eq!(p.to_dense().data, nf4_values);
        let mut row = vec![0f32; 128];
        p.dequantize_rows(2, &mut row);
        assert_eq!(&row[..], &nf4_values[256..384]);
        assert!(p.with_rows(&[1, 0]).is_none());
        let i8m = Int8Matrix::quantize(&t).unwrap();
        let i8_values = whole(&|o| i8m.dequantize_rows(0, o));
        let p = PackedMatrix::from(i8m);
        assert_eq!(p.format(), "int8");
        assert_eq!(p.to_dense().data, i8_values);
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
