//! Precision of stored factor values: f32, bf16 or f16. Values are rounded
//! once, when a module is built (round to nearest even), and kept in memory as
//! the f32 they decode to, so errors are measured on what is stored and a
//! write → read round trip is exact.

use half::{bf16, f16};

/// The element type of stored factor values.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    clap::ValueEnum,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ValueDtype {
    /// 4 bytes, exact.
    #[default]
    F32,
    /// 2 bytes, 8-bit mantissa, f32's range: the usual choice for deltas.
    Bf16,
    /// 2 bytes, 11-bit mantissa, range ±65 504.
    F16,
}

impl ValueDtype {
    /// Every dtype, widest first.
    pub const ALL: [ValueDtype; 3] = [ValueDtype::F32, ValueDtype::Bf16, ValueDtype::F16];

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            ValueDtype::F32 => 4,
            ValueDtype::Bf16 | ValueDtype::F16 => 2,
        }
    }

    /// The code stored in a CSR header (bits 2–3 of its flags).
    pub(crate) fn code(self) -> u8 {
        match self {
            ValueDtype::F32 => 0,
            ValueDtype::Bf16 => 1,
            ValueDtype::F16 => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ValueDtype::F32),
            1 => Some(ValueDtype::Bf16),
            2 => Some(ValueDtype::F16),
            _ => None,
        }
    }

    /// Lower-case name, as on the command line and in safetensors ("BF16" there).
    pub fn name(self) -> &'static str {
        match self {
            ValueDtype::F32 => "f32",
            ValueDtype::Bf16 => "bf16",
            ValueDtype::F16 => "f16",
        }
    }

    /// `x` rounded to this dtype, as f32. Values beyond f16's range become
    /// ±∞, which the CSR refuses: such a factor cannot be stored as f16.
    pub fn round(self, x: f32) -> f32 {
        match self {
            ValueDtype::F32 => x,
            ValueDtype::Bf16 => round_bf16(x),
            ValueDtype::F16 => f16::from_f32(x).to_f32(),
        }
    }

    /// Rounds every value in place (the slice form of `round`, vectorized).
    pub fn round_slice(self, values: &mut [f32]) {
        match self {
            ValueDtype::F32 => {}
            ValueDtype::Bf16 => values.iter_mut().for_each(|v| *v = round_bf16(*v)),
            ValueDtype::F16 => {
                use half::slice::HalfFloatSliceExt;
                let mut half = vec![f16::ZERO; values.len()];
                half.convert_from_f32_slice(values);
                half.convert_to_f32_slice(values);
            }
        }
    }

    /// Appends the stored bytes of `x` (already rounded) to `out`.
    pub(crate) fn put(self, out: &mut Vec<u8>, x: f32) {
        match self {
            ValueDtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
            ValueDtype::Bf16 => out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
            ValueDtype::F16 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
        }
    }

    /// Decodes one value from exactly `self.bytes()` bytes.
    pub(crate) fn get(self, b: &[u8]) -> f32 {
        match (self, b) {
            (ValueDtype::F32, [a, b, c, d]) => f32::from_le_bytes([*a, *b, *c, *d]),
            (ValueDtype::Bf16, [a, b]) => bf16::from_le_bytes([*a, *b]).to_f32(),
            (ValueDtype::F16, [a, b]) => f16::from_le_bytes([*a, *b]).to_f32(),
            _ => f32::NAN,
        }
    }

    /// Expected squared relative rounding error of one value (uniform
    /// rounding within half a unit in the last place): used to predict the
    /// error a dtype adds before the exact measurement.
    pub fn rounding_variance(self) -> f64 {
        let ulp = match self {
            ValueDtype::F32 => 0.0,
            ValueDtype::Bf16 => 2f64.powi(-7),
            ValueDtype::F16 => 2f64.powi(-10),
        };
        // Relative step of the mantissa, averaged over a binade: (ulp/2)²/3
        // at the top, ×2 at the bottom; ≈ ulp²/8.
        ulp * ulp / 8.0
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as f32: the same result
/// as `half`'s conversion, in a form the compiler vectorizes.
#[inline]
fn round_bf16(x: f32) -> f32 {
    if !x.is_finite() {
        return bf16::from_f32(x).to_f32();
    }
    let bits = x.to_bits();
    let lsb = (bits >> 16) & 1;
    f32::from_bits(bits.wrapping_add(0x7FFF + lsb) & 0xFFFF_0000)
}

impl std::fmt::Display for ValueDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_idempotent_and_round_trips_bytes() {
        for dtype in ValueDtype::ALL {
            for x in [0.0f32, -1.5, 1.0e-3, 2.71, -7.7e4, 1.0e-7] {
                let r = dtype.round(x);
                assert_eq!(dtype.round(r).to_bits(), r.to_bits());
                let mut b = Vec::new();
                dtype.put(&mut b, r);
                assert_eq!(b.len(), dtype.bytes());
                let back = dtype.get(&b);
                assert!(back.to_bits() == r.to_bits() || (back.is_infinite() && r.is_infinite()));
                assert_eq!(ValueDtype::from_code(dtype.code()), Some(dtype));
            }
        }
        assert!(ValueDtype::F16.round(1.0e5).is_infinite());
        // The fast bf16 rounding is half's, value for value (ties, subnormals, overflow).
        let mut rng = crate::osd::rng::XorShift::new(3);
        let mut xs: Vec<f32> = (0..20_000)
            .map(|_| f32::from_bits(rng.next_u64() as u32))
            .filter(|x| x.is_finite())
            .collect();
        xs.extend([
            f32::MAX,
            -f32::MAX,
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            1e-40,
        ]);
        for dtype in ValueDtype::ALL {
            let mut slice = xs.clone();
            dtype.round_slice(&mut slice);
            for (x, got) in xs.iter().zip(&slice) {
                let want = match dtype {
                    ValueDtype::F32 => *x,
                    ValueDtype::Bf16 => bf16::from_f32(*x).to_f32(),
                    ValueDtype::F16 => f16::from_f32(*x).to_f32(),
                };
                assert_eq!(got.to_bits(), want.to_bits(), "{dtype} {x:e}");
                assert_eq!(dtype.round(*x).to_bits(), want.to_bits(), "{dtype} {x:e}");
            }
        }
        assert_eq!(ValueDtype::from_code(3), None);
    }
}
