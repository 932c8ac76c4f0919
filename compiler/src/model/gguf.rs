//! The GGUF container (llama.cpp's format, version 2 and 3): header, metadata
//! and tensor directory. Tensor *data* is the runtime's business; this module
//! reads only what describes the model, which is what `peftc check` needs.
//!
//! Layout (little endian): magic `GGUF`, version u32, tensor count u64,
//! metadata count u64, then metadata `key: string, type: u32, value`, then
//! tensor infos `name: string, n_dims: u32, dims: u64 * n_dims, type: u32,
//! offset: u64`, then padding to `general.alignment` (default 32), then data.

use std::io::{BufReader, Read};
use std::path::Path;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor element types peftc knows the storage size of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    /// A type id this version of peftc does not know.
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// (elements per block, bytes per block), `None` for unknown types.
    pub fn block(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Q8K => (256, 292),
            GgmlType::Other(_) => return None,
        })
    }

    /// A block-quantized type (not a float format).
    pub fn is_quantized(self) -> bool {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => false,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Q8K
            | GgmlType::Other(_) => true,
        }
    }

    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "f32".into(),
            GgmlType::F16 => "f16".into(),
            GgmlType::BF16 => "bf16".into(),
            GgmlType::Q4_0 => "q4_0".into(),
            GgmlType::Q4_1 => "q4_1".into(),
            GgmlType::Q5_0 => "q5_0".into(),
            GgmlType::Q5_1 => "q5_1".into(),
            GgmlType::Q8_0 => "q8_0".into(),
            GgmlType::Q8_1 => "q8_1".into(),
            GgmlType::Q2K => "q2_k".into(),
            GgmlType::Q3K => "q3_k".into(),
            GgmlType::Q4K => "q4_k".into(),
            GgmlType::Q5K => "q5_k".into(),
            GgmlType::Q6K => "q6_k".into(),
            GgmlType::Q8K => "q8_k".into(),
            GgmlType::Other(id) => format!("ggml type {id}"),
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (a row's length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data, `None` for unknown types or sizes not a whole number of blocks.
    pub fn byte_len(&self) -> Option<u64> {
        let (per, bytes) = self.ty.block()?;
        let n = self.elements();
        n.is_multiple_of(per).then(|| n / per * bytes)
    }
}

/// Everything before the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    /// Absolute file offset where the data section starts.
    pub data_offset: u64,
    pub alignment: u64,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{path}`: {what} (at byte {offset})")]
pub struct GgufError {
    pub path: String,
    pub offset: u64,
    pub what: String,
}

/// Limits that keep a corrupt or hostile file from allocating without bound.
const MAX_STRING: u64 = 1 << 26;
const MAX_ARRAY: u64 = 1 << 26;
const MAX_ITEMS: u64 = 1 << 24;
/// Elements one tensor may hold (2^44: 70 TB of f32, far past any model).
const MAX_ELEMENTS: u64 = 1 << 44;
const MAX_DIMS: u32 = 8;

struct Cursor<R> {
    inner: R,
    offset: u64,
    path: String,
}

impl<R: Read> Cursor<R> {
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, GgufError> {
        Err(GgufError {
            path: self.path.clone(),
            offset: self.offset,
            what: what.into(),
        })
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        match self.inner.read_exact(&mut b) {
            Ok(()) => {
                self.offset += N as u64;
                Ok(b)
            }
            Err(_) => self.fail("file ends inside the header (truncated?)"),
        }
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return self.fail(format!("string of {len} bytes is implausibly long"));
        }
        let mut buf = vec![0u8; len as usize];
        if self.inner.read_exact(&mut buf).is_err() {
            return self.fail("file ends inside a string (truncated?)");
        }
        self.offset += len;
        // Tokenizer vocabularies can hold invalid UTF-8 pieces; keep them lossily.
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn value(&mut self, ty: u32, budget: &mut u64) -> Result<GgufValue, GgufError> {
        if *budget == 0 {
            return self.fail("too many metadata values");
        }
        *budget -= 1;
        Ok(match ty {
            0 => GgufValue::U8(self.bytes::<1>()?[0]),
            1 => GgufValue::I8(self.bytes::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.bytes()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.bytes()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.bytes()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.bytes()?)),
            7 => GgufValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 => {
                let inner = self.u32()?;
                let n = self.u64()?;
                if n > MAX_ARRAY || inner == 9 {
                    return self.fail(format!(
                        "array of {n} items of type {inner} is not supported"
                    ));
                }
                let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    items.push(self.value(inner, budget)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.bytes()?)),
            other => return self.fail(format!("unknown metadata value type {other}")),
        })
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read_header(path: &Path) -> Result<GgufHeader, GgufError> {
    let file = std::fs::File::open(path).map_err(|e| GgufError {
        path: path.display().to_string(),
        offset: 0,
        what: format!("cannot open: {e}"),
    })?;
    parse_header(
        BufReader::with_capacity(1 << 20, file),
        &path.display().to_string(),
    )
}

/// Reads a GGUF header from any reader (`name` is used in errors).
pub fn parse_header<R: Read>(reader: R, name: &str) -> Result<GgufHeader, GgufError> {
    let mut c = Cursor {
        inner: reader,
        offset: 0,
        path: name.to_string(),
    };
    if &c.bytes::<4>()? != b"GGUF" {
        return c.fail("not a GGUF file (bad magic)");
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return c.fail(format!(
            "GGUF version {version} is not supported (2 or 3 are)"
        ));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    if n_tensors > MAX_ITEMS || n_kv > MAX_ITEMS {
        return c.fail(format!(
            "implausible counts: {n_tensors} tensors, {n_kv} metadata keys"
        ));
    }
    let mut budget = MAX_ARRAY * 2;
    let mut metadata = Vec::with_capacity(n_kv.min(4096) as usize);
    for _ in 0..n_kv {
        let key = c.string()?;
        let ty = c.u32()?;
        let v = c.value(ty, &mut budget)?;
        metadata.push((key, v));
    }
    // Capacity from the counts only up to a small bound: a hostile header may lie.
    let mut tensors = Vec::with_capacity(n_tensors.min(4096) as usize);
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return c.fail(format!("tensor `{name}` has {n_dims} dimensions"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        if dims.contains(&0) {
            return c.fail(format!("tensor `{name}` has a zero dimension: {dims:?}"));
        }
        // Every count below derives from this product; keep it far from overflow.
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS);
        if elements.is_none() {
            return c.fail(format!(
                "tensor `{name}` has dimensions {dims:?}, more than {MAX_ELEMENTS} elements"
            ));
        }
        let ty = GgmlType::from_id(c.u32()?);
        let offset = c.u64()?;
        tensors.push(GgufTensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(32);
    if !alignment.is_power_of_two() || alignment > 1 << 16 {
        return c.fail(format!(
            "general.alignment is {alignment}; GGUF needs a power of two (32 by default)"
        ));
    }
    let data_offset = c.offset.div_ceil(alignment) * alignment;
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        data_offset,
        alignment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    #[test]
    fn reads_a_hand_made_header() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        put_str(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        put_str(&mut b, "llama");
        put_str(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(30u32.to_le_bytes());
        put_str(&mut b, "token_embd.weight");
        b.extend(2u32.to_le_bytes());
        b.extend(576u64.to_le_bytes());
        b.extend(49152u64.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let h = parse_header(&b[..], "mem").expect("parses");
        assert_eq!(
            h.get("general.architecture").and_then(|v| v.as_str()),
            Some("llama")
        );
        assert_eq!(
            h.get("llama.block_count").and_then(|v| v.as_u64()),
            Some(30)
        );
        let t = &h.tensors[0];
        assert_eq!(t.ty, GgmlType::Q8_0);
        assert_eq!(t.byte_len(), Some(576 * 49152 / 32 * 34));
        assert_eq!(h.data_offset % 32, 0);
    }

    #[test]
    fn truncated_and_bad_magic_are_errors() {
        assert!(parse_header(&b"GGU"[..], "x").is_err());
        let e = parse_header(&b"NOPE\x03\0\0\0"[..], "x").expect_err("bad magic");
        assert!(e.what.contains("magic"));
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes()); // absurd key length
        let e = parse_header(&b[..], "x").expect_err("absurd string");
        assert!(e.what.contains("implausibly long"), "{e}");
    }

    /// Found by `fuzz/fuzz_targets/gguf_file.rs`: dimensions whose product
    /// overflows made the element count wrap, and the runtime's buffer for
    /// it a capacity overflow.
    #[test]
    fn overflowing_dimensions_and_bad_alignment_are_errors() {
        let header = |dims: &[u64], alignment: Option<u64>| {
            let mut b = b"GGUF".to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(1u64.to_le_bytes());
            b.extend((alignment.is_some() as u64).to_le_bytes());
            if let Some(a) = alignment {
                put_str(&mut b, "general.alignment");
                b.extend(10u32.to_le_bytes()); // u64
                b.extend(a.to_le_bytes());
            }
            put_str(&mut b, "t");
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(0u32.to_le_bytes()); // f32
            b.extend(0u64.to_le_bytes());
            b
        };
        assert!(parse_header(&header(&[4, 8], None)[..], "x").is_ok());
        // A zero dimension made a Q weight of 2^40 empty rows that took
        // minutes to "unpermute" (a fuzz timeout).
        let e = parse_header(&header(&[0, 1 << 40], None)[..], "x").expect_err("zero");
        assert!(e.what.contains("zero dimension"), "{e}");
        let e = parse_header(&header(&[1 << 33, 1 << 33], None)[..], "x").expect_err("wraps");
        assert!(e.what.contains("more than"), "{e}");
        let e = parse_header(&header(&[4], Some(u64::MAX))[..], "x").expect_err("alignment");
        assert!(e.what.contains("power of two"), "{e}");
        assert!(parse_header(&header(&[4], Some(64))[..], "x").is_ok());
    }
}
