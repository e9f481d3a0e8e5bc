//! The payload of an OSD section: the compressed modules of one layer.
//!
//! Layout (little-endian): `"OSDL"`, version u16 = 1, count u32, then per
//! module: name (u16 length + UTF-8), base tensor (u16 + UTF-8), flags u8
//! (bit 0: fan_in_fan_out), payload length u64, [`OsdModule`] bytes. Every
//! length is checked against the bytes present before use.

use super::error::OsdError;
use super::module::OsdModule;

const MAGIC: &[u8; 4] = b"OSDL";
const VERSION: u16 = 1;

/// One compressed module and where it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct OsdEntry {
    /// Module name.
    pub module: String,
    /// Base weight the delta is added to.
    pub base_tensor: String,
    /// The base stores the weight transposed (GPT-2 `Conv1D`).
    pub fan_in_fan_out: bool,
    /// The compressed delta.
    pub osd: OsdModule,
}

/// Encodes the OSD modules of one layer as a section payload.
pub fn encode_layer(entries: &[OsdEntry]) -> Result<Vec<u8>, OsdError> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        for text in [&e.module, &e.base_tensor] {
            let len = u16::try_from(text.len())
                .map_err(|_| OsdError::param("name", "longer than 65535 bytes"))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.push(u8::from(e.fan_in_fan_out));
        let payload = e.osd.to_bytes()?;
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
    }
    Ok(out)
}

/// A bounds-checked cursor over the payload.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], OsdError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                OsdError::malformed(
                    what,
                    format!(
                        "needs {n} bytes at {}, {} left",
                        self.at,
                        self.buf.len() - self.at
                    ),
                )
            })?;
        let slice = &self.buf[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, OsdError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, OsdError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, OsdError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn text(&mut self, what: &'static str) -> Result<String, OsdError> {
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| OsdError::malformed(what, "not UTF-8"))
    }
}

/// One module of a section with its payload left encoded: what the runtime
/// keeps resident (its memory is the bytes in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    pub module: String,
    pub base_tensor: String,
    pub fan_in_fan_out: bool,
    /// The [`OsdModule`] bytes, validated when split.
    pub payload: Vec<u8>,
    /// Output and input dimensions and relaxed rank, from the payload.
    pub n: usize,
    pub d: usize,
    pub k: usize,
}

/// Splits a section payload into its modules, each validated by a full
/// parse and kept as bytes.
pub fn split_layer(buf: &[u8]) -> Result<Vec<RawEntry>, OsdError> {
    let mut out = Vec::new();
    let mut c = Cursor { buf, at: 0 };
    for_each_entry(&mut c, |module, base_tensor, flags, payload| {
        let osd = OsdModule::from_bytes(payload)?;
        out.push(RawEntry {
            module,
            base_tensor,
            fan_in_fan_out: flags & 1 != 0,
            payload: payload.to_vec(),
            n: osd.n(),
            d: osd.d(),
            k: osd.relaxed_rank(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// Decodes a section payload (checked: hostile bytes give an error, never a panic).
pub fn decode_layer(buf: &[u8]) -> Result<Vec<OsdEntry>, OsdError> {
    let mut out = Vec::new();
    let mut c = Cursor { buf, at: 0 };
    for_each_entry(&mut c, |module, base_tensor, flags, payload| {
        out.push(OsdEntry {
            module,
            base_tensor,
            fan_in_fan_out: flags & 1 != 0,
            osd: OsdModule::from_bytes(payload)?,
        });
        Ok(())
    })?;
    Ok(out)
}

/// Walks the entries of a section payload, checking every length.
fn for_each_entry(
    c: &mut Cursor<'_>,
    mut each: impl FnMut(String, String, u8, &[u8]) -> Result<(), OsdError>,
) -> Result<(), OsdError> {
    let total = c.buf.len();
    if c.take(4, "magic")? != MAGIC {
        return Err(OsdError::malformed("magic", "not an OSD section"));
    }
    let version = c.u16("version")?;
    if version != VERSION {
        return Err(OsdError::malformed(
            "version",
            format!("{version} is not supported"),
        ));
    }
    let count = c.u32("count")? as usize;
    // Each entry takes at least 13 bytes: bounds the work by the input.
    if count > total / 13 {
        return Err(OsdError::malformed(
            "count",
            format!("{count} entries cannot fit in {total} bytes"),
        ));
    }
    for _ in 0..count {
        let module = c.text("module name")?;
        let base_tensor = c.text("base tensor")?;
        let flags = c.take(1, "flags")?[0];
        let len = usize::try_from(c.u64("payload length")?)
            .map_err(|_| OsdError::malformed("payload length", "too large"))?;
        let payload = c.take(len, "payload")?;
        each(module, base_tensor, flags, payload)?;
    }
    if c.at != total {
        return Err(OsdError::malformed(
            "trailing bytes",
            format!("{} after the last module", total - c.at),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osd::{dense_svd, Matrix};

    fn entry() -> OsdEntry {
        let m = Matrix::from_fn(12, 10, |i, j| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let svd = dense_svd(&m, 4).unwrap();
        let osd = OsdModule::sparsified(
            &svd,
            2,
            4,
            400,
            crate::osd::ValueDtype::Bf16,
            None,
            crate::osd::Selector::Damage,
        )
        .unwrap();
        OsdEntry {
            module: "layer.0.q".into(),
            base_tensor: "layer.0.q.weight".into(),
            fan_in_fan_out: true,
            osd,
        }
    }

    #[test]
    fn layer_round_trips_and_hostile_bytes_fail() {
        let bytes = encode_layer(&[entry(), entry()]).unwrap();
        let back = decode_layer(&bytes).unwrap();
        assert_eq!(back, vec![entry(), entry()]);
        assert_eq!(encode_layer(&back).unwrap(), bytes);
        for cut in 0..bytes.len() {
            assert!(decode_layer(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_layer(&huge).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode_layer(&trailing).is_err());
    }
}
