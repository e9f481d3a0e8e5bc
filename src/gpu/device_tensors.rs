//! Tensor sections to candle tensors.
//!
//! A section's safetensors blob is parsed once ([`TensorBlob`]: zero-copy
//! views of the mapped file); each view becomes a candle tensor with exactly
//! one copy, the one candle needs to own its storage (host memory on CPU, the
//! upload on CUDA). With a dtype conversion on CPU the copy and the
//! conversion are one pass; on CUDA the raw bytes are uploaded and converted
//! on the device.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::error::{Result, RuntimeError};
use crate::format::reader::{ExpertReader, SectionInfo};
use crate::format::tensors::{ModuleInfo, SectionTable, TensorBlob};

/// safetensors dtype → candle dtype.
pub fn to_candle_dtype(dtype: Dtype) -> Result<DType> {
    Ok(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        Dtype::U8 => DType::U8,
        Dtype::U32 => DType::U32,
        Dtype::I16 => DType::I16,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        other => {
            return Err(RuntimeError::Corrupt(format!(
                "dtype {other:?} has no tensor type in the runtime"
            )))
        }
    })
}

/// candle dtype → safetensors dtype (for writing merged weights).
pub fn from_candle_dtype(dtype: DType) -> Result<Dtype> {
    Ok(match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F64 => Dtype::F64,
        DType::U8 => Dtype::U8,
        DType::U32 => Dtype::U32,
        DType::I16 => Dtype::I16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        other => {
            return Err(RuntimeError::Invalid(format!(
                "dtype {other:?} cannot be written to safetensors here"
            )))
        }
    })
}

/// `f32`, `f16`, `bf16` (the command-line names) as a candle dtype.
pub fn parse_dtype(name: &str) -> Option<DType> {
    crate::format::tensors::parse_dtype(name).and_then(|d| to_candle_dtype(d).ok())
}

/// Bytes a tensor occupies on its device.
pub fn tensor_nbytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// Raw little-endian bytes → a tensor on `device`, converted to `want` when
/// given. One copy on CPU (fused with the conversion); one upload on CUDA.
pub fn raw_to_tensor(
    data: &[u8],
    dtype: Dtype,
    shape: &[usize],
    device: &Device,
    want: Option<DType>,
) -> Result<Tensor> {
    let src = to_candle_dtype(dtype)?;
    let want = want.unwrap_or(src);
    if want == src {
        return Ok(Tensor::from_raw_buffer(data, src, shape, device)?);
    }
    if device.is_cpu() {
        if let Some(t) = convert_on_host(data, dtype, shape, want)? {
            return Ok(t);
        }
    }
    Ok(Tensor::from_raw_buffer(data, src, shape, device)?.to_dtype(want)?)
}

/// Decodes and converts in one pass over the bytes (float dtypes only).
fn convert_on_host(
    data: &[u8],
    dtype: Dtype,
    shape: &[usize],
    want: DType,
) -> Result<Option<Tensor>> {
    fn read<T>(data: &[u8], n: usize, f: impl Fn(&[u8]) -> T) -> Vec<T> {
        data.chunks_exact(n).map(f).collect()
    }
    let as_f32: fn(&[u8]) -> f32 = match dtype {
        Dtype::F32 => |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        Dtype::F16 => |c| f16::from_le_bytes([c[0], c[1]]).to_f32(),
        Dtype::BF16 => |c| bf16::from_le_bytes([c[0], c[1]]).to_f32(),
        _ => return Ok(None),
    };
    let width = dtype.bitsize() / 8;
    let dev = &Device::Cpu;
    let t = match want {
        DType::F32 => Tensor::from_vec(read(data, width, as_f32), shape, dev)?,
        DType::F16 => {
            Tensor::from_vec(read(data, width, |c| f16::from_f32(as_f32(c))), shape, dev)?
        }
        DType::BF16 => {
            Tensor::from_vec(read(data, width, |c| bf16::from_f32(as_f32(c))), shape, dev)?
        }
        DType::F64 => Tensor::from_vec(read(data, width, |c| f64::from(as_f32(c))), shape, dev)?,
        _ => return Ok(None),
    };
    Ok(Some(t))
}

/// A safetensors view → a tensor on `device`.
pub fn view_to_tensor(
    view: &TensorView<'_>,
    device: &Device,
    want: Option<DType>,
) -> Result<Tensor> {
    raw_to_tensor(view.data(), view.dtype(), view.shape(), device, want)
}

/// Runs `f` on the host storage of `t` and the element range of its data;
/// `t` is brought to the host and made contiguous first only when it is not
/// already (otherwise this borrows, no copy).
pub fn with_host_storage<R>(
    t: &Tensor,
    f: impl FnOnce(&candle_core::CpuStorage, std::ops::Range<usize>) -> Result<R>,
) -> Result<R> {
    let t = t.to_device(&Device::Cpu)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(RuntimeError::Invalid("tensor is not on the host".into()));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| RuntimeError::Invalid("tensor is not contiguous".into()))?;
    f(cpu, start..end)
}

/// A tensor's data as little-endian bytes in its own dtype (brought to the
/// host first when it lives on a device).
pub fn tensor_to_bytes(t: &Tensor) -> Result<(Dtype, Vec<u8>)> {
    let dtype = from_candle_dtype(t.dtype())?;
    with_host_storage(t, |cpu, r| Ok((dtype, host_bytes(t.dtype(), cpu, r)?)))
}

/// The elements `r` of host storage as little-endian bytes.
fn host_bytes(
    dtype: DType,
    cpu: &candle_core::CpuStorage,
    r: std::ops::Range<usize>,
) -> Result<Vec<u8>> {
    fn bytes<T: candle_core::WithDType, const N: usize>(
        cpu: &candle_core::CpuStorage,
        range: std::ops::Range<usize>,
        le: impl Fn(T) -> [u8; N],
    ) -> Result<Vec<u8>> {
        let s = cpu.as_slice::<T>()?;
        let s = s.get(range).unwrap_or(&[]);
        let mut out = Vec::with_capacity(s.len() * N);
        for v in s {
            out.extend_from_slice(&le(*v));
        }
        Ok(out)
    }
    Ok(match dtype {
        DType::F32 => bytes::<f32, 4>(cpu, r, f32::to_le_bytes)?,
        DType::F16 => bytes::<f16, 2>(cpu, r, f16::to_le_bytes)?,
        DType::BF16 => bytes::<bf16, 2>(cpu, r, bf16::to_le_bytes)?,
        DType::F64 => bytes::<f64, 8>(cpu, r, f64::to_le_bytes)?,
        DType::U8 => bytes::<u8, 1>(cpu, r, |v| [v])?,
        DType::U32 => bytes::<u32, 4>(cpu, r, u32::to_le_bytes)?,
        DType::I16 => bytes::<i16, 2>(cpu, r, i16::to_le_bytes)?,
        DType::I32 => bytes::<i32, 4>(cpu, r, i32::to_le_bytes)?,
        DType::I64 => bytes::<i64, 8>(cpu, r, i64::to_le_bytes)?,
        other => {
            return Err(RuntimeError::Invalid(format!(
                "dtype {other:?} cannot be written"
            )))
        }
    })
}

/// The tensors of one section, on a device.
#[derive(Debug, Clone)]
pub struct SectionTensors {
    /// Section index in the file (`usize::MAX` when not from a file).
    pub index: usize,
    pub name: String,
    pub layer: Option<u32>,
    /// Tensors in data order.
    pub tensors: Vec<(String, Tensor)>,
    /// expertui's table for the section (modules, source file).
    pub table: SectionTable,
    /// Bytes the tensors occupy on the device.
    pub bytes: usize,
}

impl SectionTensors {
    /// The tensor with this name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The section's module table.
    pub fn modules(&self) -> &[ModuleInfo] {
        &self.table.modules
    }

    /// Tensors by name (a map for lookups).
    pub fn into_map(self) -> HashMap<String, Tensor> {
        self.tensors.into_iter().collect()
    }
}

/// Decodes a tensor blob into tensors on `device`.
pub fn blob_to_tensors(
    bytes: &[u8],
    context: &str,
    device: &Device,
    want: Option<DType>,
) -> Result<(Vec<(String, Tensor)>, SectionTable)> {
    let blob = TensorBlob::parse(bytes, context)?;
    let table = blob.table(context)?;
    let tensors = blob
        .tensors
        .iter()
        .map(|(name, view)| Ok((name.clone(), view_to_tensor(view, device, want)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((tensors, table))
}

/// Checks one section's stored bytes against its TOC digest.
pub fn verify_section(reader: &ExpertReader, info: &SectionInfo) -> Result<()> {
    Ok(reader.check_section(info.index)?)
}

/// Loads section `index` of an open file (decoding it when compressed).
pub fn load_section(
    reader: &ExpertReader,
    index: usize,
    device: &Device,
    want: Option<DType>,
    verify: bool,
) -> Result<SectionTensors> {
    let info = reader
        .sections()
        .get(index)
        .ok_or_else(|| RuntimeError::Invalid(format!("no section #{index}")))?;
    if verify {
        verify_section(reader, info)?;
    }
    let bytes = reader.section(index)?;
    let (tensors, table) = if info.kind == crate::format::layout::SectionType::Osd {
        super::osd_runtime::osd_section_tensors(&bytes, info.layer, device, want)?
    } else {
        blob_to_tensors(&bytes, &info.name, device, want)?
    };
    let total = tensors.iter().map(|(_, t)| tensor_nbytes(t)).sum();
    Ok(SectionTensors {
        index,
        name: info.name.clone(),
        layer: info.layer,
        tensors,
        table,
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_round_trip_and_convert() {
        let values = [1.0f32, -2.5, 3.25, 0.1];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = raw_to_tensor(&bytes, Dtype::F32, &[2, 2], &Device::Cpu, None).unwrap();
        assert_eq!(t.dims(), &[2, 2]);
        assert_eq!(tensor_to_bytes(&t).unwrap(), (Dtype::F32, bytes.clone()));
        let h = raw_to_tensor(&bytes, Dtype::F32, &[4], &Device::Cpu, Some(DType::F16)).unwrap();
        assert_eq!(h.dtype(), DType::F16);
        let back: Vec<f32> = h.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert_eq!(back[..3], values[..3]);
        assert!((back[3] - 0.1).abs() < 1e-3);
        let (dtype, hb) = tensor_to_bytes(&h).unwrap();
        assert_eq!((dtype, hb.len()), (Dtype::F16, 8));
        let w = raw_to_tensor(&hb, Dtype::F16, &[4], &Device::Cpu, Some(DType::F32)).unwrap();
        assert_eq!(w.to_vec1::<f32>().unwrap(), back);
    }
}
