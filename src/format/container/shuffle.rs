//! Byte-plane shuffle (as ZipNN does): within each block, byte `j` of every
//! element is gathered into plane `j`. Exponent bytes of floats then sit next
//! to each other and compress far better. Blocks keep streaming possible.

/// Bytes shuffled as one unit; the last block of a section may be shorter.
pub const SHUFFLE_BLOCK: usize = 1 << 20;

/// Shuffles one block into `out` (cleared first). Trailing bytes that do not
/// fill a whole element are copied unchanged after the planes.
pub fn shuffle_block(block: &[u8], element_size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(block.len());
    let whole = block.len() - block.len() % element_size;
    for plane in 0..element_size {
        out.extend(block[..whole].iter().skip(plane).step_by(element_size));
    }
    out.extend_from_slice(&block[whole..]);
}

/// Inverse of [`shuffle_block`], in place through a scratch buffer.
pub fn unshuffle_block(block: &mut [u8], element_size: usize, scratch: &mut Vec<u8>) {
    let whole = block.len() - block.len() % element_size;
    let count = whole / element_size;
    scratch.clear();
    scratch.extend_from_slice(&block[..whole]);
    for (plane, bytes) in scratch
        .chunks_exact(count.max(1))
        .enumerate()
        .take(element_size)
    {
        for (i, &b) in bytes.iter().enumerate() {
            block[i * element_size + plane] = b;
        }
    }
}

/// Unshuffles a whole decoded section, block by block.
pub fn unshuffle_section(data: &mut [u8], element_size: usize) {
    let mut scratch = Vec::new();
    for block in data.chunks_mut(SHUFFLE_BLOCK) {
        unshuffle_block(block, element_size, &mut scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_round_trips_with_odd_tail() {
        let data: Vec<u8> = (0..1031u32).map(|i| (i * 7 % 251) as u8).collect();
        for es in [2, 4, 8] {
            let mut shuffled = Vec::new();
            shuffle_block(&data, es, &mut shuffled);
            assert_ne!(shuffled, data);
            unshuffle_section(&mut shuffled, es);
            assert_eq!(shuffled, data);
        }
    }

    #[test]
    fn shuffle_groups_planes() {
        let mut out = Vec::new();
        shuffle_block(&[1, 2, 3, 4, 5, 6, 7], 2, &mut out);
        assert_eq!(out, vec![1, 3, 5, 2, 4, 6, 7]);
    }
}
