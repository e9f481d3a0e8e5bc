//! The paper's storage accounting, reported beside the bytes written.
//!
//! A kept entry of Û (n×k) costs a 32-bit value plus a flat index of
//! `⌈log₂(n·k)⌉` bits; one of V̂ᵀ (k×d) costs `32 + ⌈log₂(d·k)⌉`. Per layer:
//! `bits = 32(s_u + s_v) + ⌈log₂(n·k)⌉·s_u + ⌈log₂(d·k)⌉·s_v`, compared with
//! a dense truncated SVD at rank r: `32·r·(n + d)` (the paper's accounting;
//! the CSR bytes actually written are usually smaller).

/// `⌈log₂ x⌉` (0 for x ≤ 1).
pub fn ceil_log2(x: u64) -> u32 {
    if x <= 1 {
        0
    } else {
        64 - (x - 1).leading_zeros()
    }
}

/// Bits of one kept entry of a factor with `len` entries.
pub fn entry_bits(len: u64) -> u64 {
    32 + u64::from(ceil_log2(len))
}

/// Storage of an OSD layer keeping `s_u` entries of Û and `s_v` of V̂ᵀ at rank k.
pub fn osd_bits(n: usize, d: usize, k: usize, s_u: usize, s_v: usize) -> u64 {
    let (n, d, k) = (n as u64, d as u64, k as u64);
    entry_bits(n.saturating_mul(k)).saturating_mul(s_u as u64)
        + entry_bits(d.saturating_mul(k)).saturating_mul(s_v as u64)
}

/// Storage of a dense rank-r truncated SVD (f32 factors).
pub fn trunc_svd_bits(n: usize, d: usize, r: usize) -> u64 {
    32u64
        .saturating_mul(r as u64)
        .saturating_mul((n as u64).saturating_add(d as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting() {
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(1024), 10);
        assert_eq!(ceil_log2(1025), 11);
        assert_eq!(osd_bits(100, 50, 8, 10, 20), 10 * (32 + 10) + 20 * (32 + 9));
        assert_eq!(trunc_svd_bits(100, 50, 8), 32 * 8 * 150);
    }
}
