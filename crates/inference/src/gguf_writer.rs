//! A writer for GGUF files (version 3), the format llama.cpp loads: metadata
//! key/values, tensor descriptions, then aligned tensor data. Only what the tiny
//! generated model needs: scalars, strings, arrays, F32 and Q8_0 tensors.

use std::io::{self, Write};

use half::f16;

const ALIGNMENT: usize = 32;
const QK8_0: usize = 32;

/// A metadata value.
#[derive(Debug, Clone)]
pub enum Value {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    F32Array(Vec<f32>),
    I32Array(Vec<i32>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U32(_) => 4,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::StrArray(_) | Value::F32Array(_) | Value::I32Array(_) => 9,
        }
    }
}

/// How a tensor's numbers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    /// Blocks of 32 weights: one f16 scale and 32 signed bytes.
    Q8_0,
}

impl TensorType {
    fn ggml_id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::Q8_0 => 8,
        }
    }
}

struct Tensor {
    name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    dims: Vec<u64>,
    data: Vec<u8>,
    kind: TensorType,
}

/// Collects metadata and tensors, then writes one GGUF file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

impl GgufWriter {
    pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Add a tensor given row-major `values` with `dims` in ggml order
    /// (`dims[0]` = row length).
    pub fn tensor(&mut self, name: &str, dims: &[u64], values: &[f32], kind: TensorType) {
        assert_eq!(
            dims.iter().product::<u64>() as usize,
            values.len(),
            "{name}"
        );
        let data = match kind {
            TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorType::Q8_0 => quantize_q8_0(values),
        };
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            data,
            kind,
        });
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(b"GGUF")?;
        out.write_all(&3u32.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        let mut header = 24usize;
        for (key, value) in &self.metadata {
            header += write_str(out, key)?;
            out.write_all(&value.type_id().to_le_bytes())?;
            header += 4 + write_value(out, value)?;
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            header += write_str(out, &t.name)?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.kind.ggml_id().to_le_bytes())?;
            out.write_all(&(offset as u64).to_le_bytes())?;
            header += 4 + 8 * t.dims.len() + 4 + 8;
            offsets.push(offset);
            offset = align(offset + t.data.len());
        }
        out.write_all(&vec![0u8; align(header) - header])?;
        let mut written = 0usize;
        for (t, at) in self.tensors.iter().zip(offsets) {
            out.write_all(&vec![0u8; at - written])?;
            out.write_all(&t.data)?;
            written = at + t.data.len();
        }
        Ok(())
    }
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn write_str(out: &mut impl Write, s: &str) -> io::Result<usize> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())?;
    Ok(8 + s.len())
}

fn write_value(out: &mut impl Write, value: &Value) -> io::Result<usize> {
    Ok(match value {
        Value::U32(v) => {
            out.write_all(&v.to_le_bytes())?;
            4
        }
        Value::F32(v) => {
            out.write_all(&v.to_le_bytes())?;
            4
        }
        Value::Bool(v) => {
            out.write_all(&[u8::from(*v)])?;
            1
        }
        Value::Str(s) => write_str(out, s)?,
        Value::StrArray(items) => {
            out.write_all(&8u32.to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            let mut n = 12;
            for s in items {
                n += write_str(out, s)?;
            }
            n
        }
        Value::F32Array(items) => {
            out.write_all(&6u32.to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            for v in items {
                out.write_all(&v.to_le_bytes())?;
            }
            12 + 4 * items.len()
        }
        Value::I32Array(items) => {
            out.write_all(&5u32.to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            for v in items {
                out.write_all(&v.to_le_bytes())?;
            }
            12 + 4 * items.len()
        }
    })
}

/// ggml's Q8_0: per block of 32, scale d = max|x| / 127 and q = round(x / d).
fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    assert_eq!(values.len() % QK8_0, 0, "Q8_0 rows must be multiples of 32");
    let mut out = Vec::with_capacity(values.len() / QK8_0 * 34);
    for block in values.chunks(QK8_0) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(block.iter().map(|v| (v * inv).round() as i8 as u8));
    }
    out
}
