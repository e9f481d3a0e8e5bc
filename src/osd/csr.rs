//! Compressed sparse rows for pruned factors and sparse corrections, with a
//! compact checked byte form.
//!
//! Layout (little-endian), 40-byte header then payload:
//! `"OCSR"`, version u8 (2; 1 is still read), flags u8 (bit 0: payload is
//! zstd; bit 1: dense; bits 2–3: value dtype 0 f32, 1 bf16, 2 f16 — version 1
//! knows bit 0 only), row-length width u8, column-delta width u8 (each 1, 2
//! or 4; both 0 when dense), rows u64, cols u64, nnz u64, payload length u64.
//! The raw payload of a sparse matrix is: `rows` row lengths (the row
//! pointers, delta-encoded), `nnz` column deltas (the first index of a row
//! absolute, the others the gap to the previous, ≥ 1), `nnz` values. A dense
//! one (every entry kept, nnz = rows·cols) is the values alone, row-major.
//! Each integer stream uses the smallest width that fits its largest value.
//! Parsing validates every count against the bytes actually present before
//! allocating, so hostile input yields an error, never a panic or a huge
//! allocation.

use std::io::Read;

use super::precision::ValueDtype;
use super::{Matrix, OsdError};

const MAGIC: &[u8; 4] = b"OCSR";
const VERSION: u8 = 2;
const FLAG_ZSTD: u8 = 1;
const FLAG_DENSE: u8 = 2;
const DTYPE_SHIFT: u8 = 2;
const HEADER_LEN: usize = 40;
const ZSTD_LEVEL: i32 = 3;
/// Most a compressed payload may expand (decoded bytes per stored byte)...
const MAX_EXPANSION: u64 = 64;
/// ...unless it decodes to at most this many bytes.
const EXPANSION_FLOOR: u64 = 16 << 20;

/// A sparse matrix in CSR form. Invariants (checked on construction): row
/// pointers start at 0, never decrease and end at nnz; column indices are
/// strictly increasing within a row and below `cols`; values are finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    rows: usize,
    cols: usize,
    row_ptr: Vec<usize>,
    col_idx: Vec<u32>,
    values: Vec<f32>,
    /// Precision the values are stored in (they hold exactly such values).
    dtype: ValueDtype,
}

fn bad(detail: impl Into<String>) -> OsdError {
    OsdError::malformed("CSR", detail)
}

/// Smallest of 1, 2, 4 bytes that holds `max`.
fn width_for(max: u64) -> u8 {
    if max <= u64::from(u8::MAX) {
        1
    } else if max <= u64::from(u16::MAX) {
        2
    } else {
        4
    }
}

fn put(out: &mut Vec<u8>, v: u32, width: u8) {
    out.extend_from_slice(&v.to_le_bytes()[..usize::from(width)]);
}

/// Little-endian reader that fails instead of reading past the end.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], OsdError> {
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| {
            OsdError::malformed(
                self.what,
                format!("truncated: need {len} bytes at offset {}", self.pos),
            )
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, OsdError> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, width: usize) -> Result<u64, OsdError> {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(self.take(width)?);
        Ok(u64::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, OsdError> {
        self.uint(8)
    }

    pub(crate) fn f32(&mut self) -> Result<f32, OsdError> {
        Ok(f32::from_bits(self.uint(4)? as u32))
    }

    /// A u64 that must fit `usize` and be at most `max`.
    pub(crate) fn count(&mut self, name: &str, max: u64) -> Result<usize, OsdError> {
        let v = self.u64()?;
        if v > max {
            return Err(OsdError::malformed(
                self.what,
                format!("{name} {v} exceeds {max}"),
            ));
        }
        usize::try_from(v)
            .map_err(|_| OsdError::malformed(self.what, format!("{name} {v} too large")))
    }
}

impl Csr {
    /// Checks the invariants and builds the matrix.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        row_ptr: Vec<usize>,
        col_idx: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Self, OsdError> {
        if cols > u32::MAX as usize {
            return Err(bad(format!("{cols} columns exceed u32 indices")));
        }
        if rows.checked_add(1) != Some(row_ptr.len()) || row_ptr.first() != Some(&0) {
            return Err(bad("row pointers must be rows + 1 values starting at 0"));
        }
        if col_idx.len() != values.len() || row_ptr.last() != Some(&values.len()) {
            return Err(bad("row pointers, indices and values disagree on nnz"));
        }
        for w in row_ptr.windows(2) {
            if w[0] > w[1] {
                return Err(bad("decreasing row pointer"));
            }
            let row = &col_idx[w[0]..w[1]];
            if row.windows(2).any(|c| c[0] >= c[1])
                || row.last().is_some_and(|&c| c as usize >= cols)
            {
                return Err(bad("column indices not increasing or out of range"));
            }
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(OsdError::NonFinite("CSR values"));
        }
        Ok(Self {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
            dtype: ValueDtype::F32,
        })
    }

    /// The same matrix with its values rounded to `dtype` (stored that way).
    /// A value out of the dtype's range (f16 above 65 504) is an error.
    pub fn rounded(mut self, dtype: ValueDtype) -> Result<Self, OsdError> {
        dtype.round_slice(&mut self.values);
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err(OsdError::param(
                "dtype",
                format!("a factor value exceeds the range of {dtype}"),
            ));
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// Precision of the stored values.
    pub fn dtype(&self) -> ValueDtype {
        self.dtype
    }

    /// Every entry kept: stored as values only.
    pub fn is_dense(&self) -> bool {
        self.rows > 0 && self.cols > 0 && self.nnz() == self.rows * self.cols
    }

    /// The transpose (cols × rows), same values and dtype.
    pub fn transpose(&self) -> Csr {
        let mut count = vec![0usize; self.cols + 1];
        for &j in &self.col_idx {
            count[j as usize + 1] += 1;
        }
        for j in 0..self.cols {
            count[j + 1] += count[j];
        }
        let row_ptr = count.clone();
        let mut next = count;
        let mut col_idx = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for i in 0..self.rows {
            let (idx, val) = self.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                let at = next[j as usize];
                col_idx[at] = i as u32;
                values[at] = v;
                next[j as usize] += 1;
            }
        }
        Csr {
            rows: self.cols,
            cols: self.rows,
            row_ptr,
            col_idx,
            values,
            dtype: self.dtype,
        }
    }

    /// Bytes `to_bytes(false)` writes for a rows×cols matrix with `nnz`
    /// entries: exact when cols ≤ 255 (OSD factors are stored with k
    /// columns), an upper bound otherwise (index widths are taken at their
    /// largest).
    pub fn encoded_len(rows: usize, cols: usize, nnz: usize, dtype: ValueDtype) -> u64 {
        let (rows, cols, nnz) = (rows as u64, cols as u64, nnz as u64);
        let vb = dtype.bytes() as u64;
        let payload = if rows > 0 && cols > 0 && nnz == rows.saturating_mul(cols) {
            nnz.saturating_mul(vb)
        } else {
            let rw = u64::from(width_for(cols));
            let cw = u64::from(width_for(cols.saturating_sub(1)));
            rows.saturating_mul(rw)
                .saturating_add(nnz.saturating_mul(cw + vb))
        };
        HEADER_LEN as u64 + payload
    }

    /// The entries of `m` where `keep` (row-major, same shape) is true.
    pub fn from_dense_masked(m: &Matrix, keep: &[bool]) -> Result<Self, OsdError> {
        if keep.len() != m.data.len() {
            return Err(OsdError::shape(
                "Csr::from_dense_masked",
                format!("mask of {} for {}x{}", keep.len(), m.rows, m.cols),
            ));
        }
        let mut row_ptr = Vec::with_capacity(m.rows + 1);
        let (mut col_idx, mut values) = (Vec::new(), Vec::new());
        row_ptr.push(0);
        for i in 0..m.rows {
            for j in 0..m.cols {
                if keep[i * m.cols + j] {
                    col_idx.push(j as u32);
                    values.push(m.get(i, j));
                }
            }
            row_ptr.push(values.len());
        }
        Self::from_parts(m.rows, m.cols, row_ptr, col_idx, values)
    }

    /// Every entry of `m` (dense factors stored in the same format; their
    /// column deltas are all 1 and cost next to nothing after zstd).
    pub fn from_dense(m: &Matrix) -> Result<Self, OsdError> {
        Self::from_dense_masked(m, &vec![true; m.data.len()])
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Column indices and values of row `i`.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let range = self.row_ptr[i]..self.row_ptr[i + 1];
        (&self.col_idx[range.clone()], &self.values[range])
    }

    /// The dense matrix.
    pub fn to_dense(&self) -> Matrix {
        let mut m = Matrix::zeros(self.rows, self.cols);
        for i in 0..self.rows {
            let (idx, val) = self.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                m.data[i * self.cols + j as usize] = v;
            }
        }
        m
    }

    /// Serializes; with `compress`, the payload is zstd'd when that is smaller.
    /// Deterministic: equal matrices give equal bytes.
    pub fn to_bytes(&self, compress: bool) -> Result<Vec<u8>, OsdError> {
        let dense = self.is_dense();
        let mut raw = Vec::with_capacity(self.rows * 2 + self.nnz() * (1 + self.dtype.bytes()));
        let (rw, cw) = if dense {
            (0, 0)
        } else {
            let row_len = |i: usize| (self.row_ptr[i + 1] - self.row_ptr[i]) as u32;
            let deltas: Vec<u32> = (0..self.rows)
                .flat_map(|i| {
                    let idx = self.row(i).0;
                    (0..idx.len()).map(move |p| if p == 0 { idx[0] } else { idx[p] - idx[p - 1] })
                })
                .collect();
            let rw = width_for((0..self.rows).map(row_len).max().map_or(0, u64::from));
            let cw = width_for(deltas.iter().copied().max().map_or(0, u64::from));
            (0..self.rows).for_each(|i| put(&mut raw, row_len(i), rw));
            deltas.iter().for_each(|&dlt| put(&mut raw, dlt, cw));
            (rw, cw)
        };
        self.values
            .iter()
            .for_each(|&v| self.dtype.put(&mut raw, v));
        let mut flags = self.dtype.code() << DTYPE_SHIFT;
        if dense {
            flags |= FLAG_DENSE;
        }
        if compress {
            let packed = zstd::bulk::compress(&raw, ZSTD_LEVEL)
                .map_err(|e| OsdError::Zstd(e.to_string()))?;
            // Stay inside what `read` accepts (see MAX_EXPANSION).
            let readable = (packed.len() as u64)
                .saturating_mul(MAX_EXPANSION)
                .max(EXPANSION_FLOOR)
                >= raw.len() as u64;
            if packed.len() < raw.len() && readable {
                raw = packed;
                flags |= FLAG_ZSTD;
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + raw.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, flags, rw, cw]);
        for v in [self.rows, self.cols, self.nnz(), raw.len()] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        out.extend_from_slice(&raw);
        Ok(out)
    }

    /// Parses one CSR from the front of `buf`; returns it and the bytes used.
    pub fn read(buf: &[u8]) -> Result<(Self, usize), OsdError> {
        let mut c = Cursor::new(buf, "CSR");
        if c.take(4)? != MAGIC {
            return Err(bad("bad magic"));
        }
        let (version, flags, rw, cw) = (c.u8()?, c.u8()?, c.u8()?, c.u8()?);
        let known = match version {
            1 => FLAG_ZSTD,
            2 => FLAG_ZSTD | FLAG_DENSE | (3 << DTYPE_SHIFT),
            _ => return Err(bad(format!("unsupported version {version}"))),
        };
        let dense = flags & FLAG_DENSE != 0;
        let dtype = ValueDtype::from_code((flags >> DTYPE_SHIFT) & 3);
        let widths_ok = if dense {
            (rw, cw) == (0, 0)
        } else {
            [1, 2, 4].contains(&rw) && [1, 2, 4].contains(&cw)
        };
        let (true, Some(dtype)) = (flags & !known == 0 && widths_ok, dtype) else {
            return Err(bad(format!("bad flags {flags} or widths {rw}/{cw}")));
        };
        let rows = c.count("rows", u64::from(u32::MAX))?;
        let cols = c.count("cols", u64::from(u32::MAX))?;
        let nnz = c.count("nnz", (rows as u64).saturating_mul(cols as u64))?;
        if dense && (nnz == 0 || nnz as u64 != (rows as u64) * (cols as u64)) {
            return Err(bad(format!(
                "a dense matrix of {rows}x{cols} declares {nnz} entries"
            )));
        }
        let stored = c.count("payload length", (buf.len() - c.pos()) as u64)?;
        let payload = c.take(stored)?;
        let (rw, cw, vb) = (usize::from(rw), usize::from(cw), dtype.bytes());
        let raw_len = if dense {
            nnz.checked_mul(vb)
        } else {
            rows.checked_mul(rw)
                .zip(nnz.checked_mul(cw + vb))
                .and_then(|(a, b)| a.checked_add(b))
        }
        .ok_or_else(|| bad("sizes overflow"))?;
        // A compressed payload may expand only so far: a few kilobytes of
        // zstd can claim gigabytes of row lengths (and 8 bytes of row
        // pointer per row). Real CSR payloads (indices and f32 values)
        // compress a few times at most; empty rows, the one thing that
        // compresses well, fit under the floor.
        if flags & FLAG_ZSTD != 0 {
            let cap = (stored as u64)
                .saturating_mul(MAX_EXPANSION)
                .max(EXPANSION_FLOOR);
            if raw_len as u64 > cap {
                return Err(bad(format!(
                    "a {stored}-byte compressed payload declares {raw_len} bytes ({rows} rows, {nnz} entries), over the {cap}-byte limit ({MAX_EXPANSION}x the payload, at least {EXPANSION_FLOOR})"
                )));
            }
        }
        let raw = if flags & FLAG_ZSTD != 0 {
            // Streamed with a cap: memory grows only with data really decoded.
            let mut raw = Vec::new();
            zstd::stream::read::Decoder::with_buffer(payload)
                .map_err(|e| OsdError::Zstd(e.to_string()))?
                .take(raw_len as u64 + 1)
                .read_to_end(&mut raw)
                .map_err(|e| OsdError::Zstd(e.to_string()))?;
            raw
        } else {
            payload.to_vec()
        };
        if raw.len() != raw_len {
            return Err(bad(format!(
                "payload is {} bytes, expected {raw_len}",
                raw.len()
            )));
        }
        let mut p = Cursor::new(&raw, "CSR payload");
        if dense {
            let values = raw.chunks_exact(vb).map(|b| dtype.get(b)).collect();
            let row_ptr = (0..=rows).map(|i| i * cols).collect();
            let col_idx = (0..rows).flat_map(|_| 0..cols as u32).collect();
            let csr = Self::from_parts(rows, cols, row_ptr, col_idx, values)?;
            return Ok((Self { dtype, ..csr }, c.pos()));
        }
        let mut row_ptr = Vec::with_capacity(rows + 1);
        row_ptr.push(0usize);
        for _ in 0..rows {
            let len = p.uint(rw)?;
            let start = row_ptr[row_ptr.len() - 1];
            if len > cols as u64 || len > (nnz - start) as u64 {
                return Err(bad("row lengths exceed cols or nnz"));
            }
            row_ptr.push(start + len as usize);
        }
        if row_ptr[rows] != nnz {
            return Err(bad("row lengths do not sum to nnz"));
        }
        let mut col_idx = Vec::with_capacity(nnz);
        for w in row_ptr.windows(2) {
            let mut prev: Option<u64> = None;
            for _ in w[0]..w[1] {
                let dlt = p.uint(cw)?;
                let col = match prev {
                    None => dlt,
                    Some(_) if dlt == 0 => return Err(bad("repeated column index")),
                    Some(q) => q + dlt,
                };
                if col >= cols as u64 {
                    return Err(bad(format!("column index {col} out of range")));
                }
                col_idx.push(col as u32);
                prev = Some(col);
            }
        }
        let values = p
            .take(nnz * vb)?
            .chunks_exact(vb)
            .map(|b| dtype.get(b))
            .collect();
        let csr = Self::from_parts(rows, cols, row_ptr, col_idx, values)?;
        Ok((Self { dtype, ..csr }, c.pos()))
    }

    /// Parses bytes holding exactly one CSR.
    pub fn from_bytes(buf: &[u8]) -> Result<Self, OsdError> {
        let (csr, used) = Self::read(buf)?;
        if used != buf.len() {
            return Err(bad(format!("{} trailing bytes", buf.len() - used)));
        }
        Ok(csr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osd::svd::tests::gaussian;

    fn sample(rows: usize, cols: usize, seed: u64) -> Csr {
        let m = gaussian(rows, cols, seed);
        let keep: Vec<bool> = m.data.iter().map(|v| v.abs() > 1.2).collect();
        Csr::from_dense_masked(&m, &keep).unwrap()
    }

    #[test]
    fn round_trip_with_and_without_zstd() {
        for (rows, cols) in [(0, 0), (3, 0), (17, 9), (40, 300), (5, 70_000)] {
            let csr = sample(rows, cols, 3);
            for compress in [false, true] {
                let bytes = csr.to_bytes(compress).unwrap();
                let back = Csr::from_bytes(&bytes).unwrap();
                assert_eq!(back, csr);
                assert_eq!(back.to_bytes(compress).unwrap(), bytes);
            }
        }
        // Widths adapt: long rows need 2-byte lengths, a column past 65 535 4-byte deltas.
        let bytes = sample(5, 70_000, 1).to_bytes(false).unwrap();
        assert_eq!(bytes[6], 2);
        let far = Csr::from_parts(1, 70_000, vec![0, 1], vec![69_999], vec![1.0]).unwrap();
        let bytes = far.to_bytes(false).unwrap();
        assert_eq!((bytes[6], bytes[7]), (1, 4));
        assert_eq!(Csr::from_bytes(&bytes).unwrap(), far);
        let dense = gaussian(20, 30, 4);
        let all = Csr::from_dense(&dense).unwrap();
        assert_eq!(all.to_dense(), dense);
        assert!(all.to_bytes(true).unwrap().len() < all.to_bytes(false).unwrap().len());
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let csr = sample(30, 40, 5);
        for compress in [false, true] {
            let bytes = csr.to_bytes(compress).unwrap();
            for cut in 0..bytes.len() {
                assert!(Csr::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
            }
            let mut extra = bytes.clone();
            extra.push(0);
            assert!(Csr::from_bytes(&extra).is_err());
        }
        let bytes = csr.to_bytes(false).unwrap();
        let patched = |off: usize, v: u64| {
            let mut b = bytes.clone();
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
            Csr::from_bytes(&b)
        };
        assert!(patched(8, u64::MAX).is_err()); // rows
        assert!(patched(16, 1 << 40).is_err()); // cols
        assert!(patched(24, u64::MAX).is_err()); // nnz
        assert!(patched(24, csr.nnz() as u64 + 1).is_err());
        assert!(patched(32, u64::MAX).is_err()); // payload length
        assert!(patched(16, 2).is_err()); // columns now out of range
        let mut b = bytes.clone();
        b[5] = 0x80; // unknown flag
        assert!(Csr::from_bytes(&b).is_err());
        let mut b = bytes.clone();
        b[6] = 3; // bad width
        assert!(Csr::from_bytes(&b).is_err());
        let mut b = bytes.clone();
        b[HEADER_LEN] = 200; // first row length > cols
        assert!(Csr::from_bytes(&b).is_err());
        let mut b = bytes.clone();
        let last = b.len() - 4;
        b[last..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(Csr::from_bytes(&b), Err(OsdError::NonFinite("CSR values")));
        // A zstd payload that is garbage.
        let mut b = csr.to_bytes(true).unwrap();
        assert_eq!(b[5], FLAG_ZSTD);
        let n = b.len();
        b[HEADER_LEN..n].iter_mut().for_each(|x| *x ^= 0x5A);
        assert!(Csr::from_bytes(&b).is_err());
        assert!(Csr::from_parts(1, 3, vec![0, 2], vec![2, 1], vec![1.0, 2.0]).is_err());
        assert!(Csr::from_parts(1, 3, vec![0, 1], vec![3], vec![1.0]).is_err());
    }
}
