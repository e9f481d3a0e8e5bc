//! NumPy `.npy` arrays (version 1, 2 and 3 headers), read into a tensor.
//!
//! Router embeddings are often saved with `numpy.save`; the container stores
//! them as safetensors like every other tensor section. Only C-ordered
//! little-endian (or byte-order-free) numeric arrays are accepted; every size
//! is checked against the bytes really there before anything is allocated.

use safetensors::Dtype;

use super::tensors::{OwnedTensor, TensorMeta};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers are small dictionaries; anything longer is not a real one.
const MAX_HEADER: usize = 64 << 10;

/// Why an `.npy` file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("npy: {0}")]
pub struct NpyError(pub String);

fn err(message: impl Into<String>) -> NpyError {
    NpyError(message.into())
}

/// The value of `'key':` in the header dictionary, as written.
fn field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header.get(at + key.len() + 2..)?;
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

fn dtype_of(descr: &str) -> Result<Dtype, NpyError> {
    let (order, code) = match descr.split_at_checked(1) {
        Some((o @ ("<" | "|" | "="), c)) => (o, c),
        Some((">", _)) => return Err(err(format!("big-endian dtype {descr:?} is not supported"))),
        _ => ("<", descr),
    };
    let _ = order;
    Ok(match code {
        "f2" => Dtype::F16,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i1" => Dtype::I8,
        "i2" => Dtype::I16,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "u1" => Dtype::U8,
        "u2" => Dtype::U16,
        "u4" => Dtype::U32,
        "u8" => Dtype::U64,
        "b1" => Dtype::BOOL,
        other => return Err(err(format!("dtype {other:?} is not supported"))),
    })
}

/// Parses an `.npy` file into a tensor called `name`.
pub fn read_npy(bytes: &[u8], name: &str) -> Result<OwnedTensor, NpyError> {
    if !bytes.starts_with(MAGIC) {
        return Err(err("not an .npy file (no \\x93NUMPY magic)"));
    }
    let major = *bytes.get(6).ok_or_else(|| err("truncated header"))?;
    let (len, start) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or_else(|| err("truncated header"))?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10usize)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or_else(|| err("truncated header"))?;
            (
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                12usize,
            )
        }
        v => return Err(err(format!("unknown .npy version {v}"))),
    };
    if len > MAX_HEADER {
        return Err(err(format!("header of {len} bytes is too long")));
    }
    let end = start
        .checked_add(len)
        .ok_or_else(|| err("header length overflows"))?;
    let header = bytes
        .get(start..end)
        .ok_or_else(|| err("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text"))?;
    let descr = field(header, "descr")
        .and_then(|v| v.strip_prefix('\'').or_else(|| v.strip_prefix('"')))
        .and_then(|v| v.split(['\'', '"']).next())
        .ok_or_else(|| err("header has no 'descr'"))?;
    let dtype = dtype_of(descr)?;
    if field(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(err(
            "Fortran-ordered arrays are not supported (save with order='C')",
        ));
    }
    let shape_text = field(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| err("header has no 'shape'"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| err(format!("bad shape ({shape_text})")))?;
    let element = dtype.bitsize().div_ceil(8);
    let want = shape
        .iter()
        .try_fold(element, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| err("shape overflows"))?;
    let data = bytes.get(end..).unwrap_or(&[]);
    if data.len() != want {
        return Err(err(format!(
            "shape {shape:?} of {descr} needs {want} bytes, the file holds {}",
            data.len()
        )));
    }
    Ok(OwnedTensor::new(
        TensorMeta {
            name: name.to_string(),
            dtype,
            shape,
        },
        data.to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_a_float32_matrix() {
        let data: Vec<u8> = (0..6u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = read_npy(&npy("<f4", "(2, 3)", &data), "e").unwrap();
        assert_eq!(t.dtype, Dtype::F32);
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.to_f32().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        let data = vec![0u8; 24];
        assert!(
            read_npy(&npy("<f4", "(2, 4)", &data), "e").is_err(),
            "short data"
        );
        assert!(
            read_npy(&npy(">f4", "(2, 3)", &data), "e").is_err(),
            "big-endian"
        );
        assert!(
            read_npy(&npy("<c8", "(3,)", &data), "e").is_err(),
            "complex"
        );
        assert!(read_npy(&npy("<f4", "(99999999999999999999, 3)", &data), "e").is_err());
        assert!(read_npy(&npy("<f4", "(4611686018427387904, 4)", &data), "e").is_err());
        assert!(read_npy(b"\x93NUMPY\x01\x00\xff", "e").is_err());
        assert!(read_npy(b"PK\x03\x04", "e").is_err());
        let mut fortran = npy("<f4", "(2, 3)", &data);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert!(read_npy(&fortran, "e").is_err());
    }
}
