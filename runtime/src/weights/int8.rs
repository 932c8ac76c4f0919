//! LLM.int8's weight storage: each row scaled by its absmax to `[-127, 127]`
//! and rounded, as bitsandbytes' `int8_vectorwise_quant` (what `Linear8bitLt`
//! holds as `CB` and `SCB`); a value is `q * scale / 127`.

use super::HostTensor;

/// An int8 matrix with one f32 scale (the row's absmax) per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    q: Vec<i8>,
    scale: Vec<f32>,
}

impl Int8Matrix {
    /// Quantizes `[rows, cols]` values row by row.
    pub fn quantize(t: &HostTensor) -> Result<Int8Matrix, String> {
        let &[rows, cols] = t.shape.as_slice() else {
            return Err(format!("has shape {:?}, not a matrix", t.shape));
        };
        if cols == 0 {
            return Err("has empty rows".into());
        }
        let mut q = Vec::with_capacity(t.data.len());
        let mut scale = Vec::with_capacity(rows);
        for row in t.data.chunks_exact(cols) {
            let am = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let k = 127.0 / am;
            // round-half-even, as torch.round; a zero row stays zero.
            q.extend(row.iter().map(|&v| {
                let x = if am == 0.0 {
                    0.0
                } else {
                    (v * k).round_ties_even()
                };
                x as i8
            }));
            scale.push(am);
        }
        Ok(Int8Matrix {
            rows,
            cols,
            q,
            scale,
        })
    }

    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes held: one per value and four per row.
    pub fn byte_len(&self) -> usize {
        self.q.len() + 4 * self.scale.len()
    }

    /// The codes and the row scales, as bitsandbytes holds them.
    pub fn parts(&self) -> (&[i8], &[f32]) {
        (&self.q, &self.scale)
    }

    /// Rows `start..start + out.len() / cols` as f32 into `out`.
    pub fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        for (i, row) in out.chunks_exact_mut(self.cols).enumerate() {
            let r = start + i;
            let s = self.scale[r];
            let q = &self.q[r * self.cols..(r + 1) * self.cols];
            for (o, &c) in row.iter_mut().zip(q) {
                *o = c as f32 * s / 127.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(m: &Int8Matrix) -> Vec<f32> {
        let [rows, cols] = m.shape();
        let mut out = vec![0f32; rows * cols];
        m.dequantize_rows(0, &mut out);
        out
    }

    #[test]
    fn rows_scale_to_their_absmax() {
        let t = HostTensor::new(vec![2, 3], vec![1.0, -2.0, 0.5, 0.0, 0.0, 0.0]);
        let m = Int8Matrix::quantize(&t).unwrap();
        let (q, s) = m.parts();
        assert_eq!(q, &[64, -127, 32, 0, 0, 0]);
        assert_eq!(s, &[2.0, 0.0]);
        assert_eq!(dense(&m)[1], -2.0);
        assert_eq!(m.byte_len(), 6 + 8);
    }
}
