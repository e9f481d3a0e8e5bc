//! The byte cursor: where the hex view stands and what it searches for.
//! It is shared state, not the hex panel's own, because jumps typed at the
//! prompt, list clicks and an unparsable file's error offset all move it.

/// Bytes on one hex row unless the width says otherwise.
pub const BYTES_PER_ROW: u64 = 16;

/// Bytes per row the hex view offers, narrowest first (hexyl-style 8/16/32).
pub const ROW_WIDTHS: [u64; 3] = [8, 16, 32];

/// Hex view position and options.
#[derive(Debug, Clone)]
pub struct HexState {
    pub cursor: u64,
    /// First visible row.
    pub top_row: u64,
    /// Rows that fit (updated by the renderer).
    pub visible_rows: u64,
    pub little_endian: bool,
    pub search: Option<Vec<u8>>,
    /// Bytes per row (8, 16 or 32, by the width of the view).
    pub bytes_per_row: u64,
    /// Length of the search match at the cursor (highlighted whole), 0 when
    /// the cursor is not on a match.
    pub match_len: u64,
}

impl Default for HexState {
    fn default() -> Self {
        Self {
            cursor: 0,
            top_row: 0,
            visible_rows: 16,
            little_endian: true,
            search: None,
            bytes_per_row: BYTES_PER_ROW,
            match_len: 0,
        }
    }
}

impl HexState {
    /// Moves the cursor to `offset`, kept inside a file of `len` bytes and
    /// on screen.
    pub fn goto(&mut self, offset: u64, len: u64) {
        self.match_len = 0;
        self.cursor = offset.min(len.saturating_sub(1));
        let row = self.cursor / self.bytes_per_row.max(1);
        let visible = self.visible_rows.max(1);
        if row < self.top_row {
            self.top_row = row;
        } else if row >= self.top_row + visible {
            self.top_row = row + 1 - visible;
        }
    }

    /// Jumps the cursor to `offset` and scrolls so that its row sits near
    /// the top of the view (with a little context above), as a jump to a
    /// section, a search hit or a typed offset should: the target is read
    /// downwards, not found on the last row.
    pub fn jump(&mut self, offset: u64, len: u64) {
        self.cursor = offset.min(len.saturating_sub(1));
        let row = self.cursor / self.bytes_per_row.max(1);
        let context = (self.visible_rows / 8).min(2);
        self.top_row = row.saturating_sub(context);
    }

    /// Moves the cursor by `delta` bytes (saturating at both ends).
    pub fn step(&mut self, delta: i64, len: u64) {
        let target = if delta < 0 {
            self.cursor.saturating_sub(delta.unsigned_abs())
        } else {
            self.cursor.saturating_add(delta.unsigned_abs())
        };
        self.goto(target, len);
    }

    /// Bytes in one screen of rows, for PgUp/PgDn.
    pub fn page(&self) -> i64 {
        self.visible_rows.max(1) as i64 * self.bytes_per_row.max(1) as i64
    }

    /// Moves to the next (or previous) match of the search pattern in
    /// `bytes`, wrapping; returns the message for the status line.
    pub fn search(&mut self, bytes: &[u8], forward: bool) -> String {
        let Some(pattern) = self.search.as_deref() else {
            return "no search yet: press / first".into();
        };
        let from = usize::try_from(self.cursor).unwrap_or(usize::MAX);
        let found = if forward {
            find(bytes.get(from.saturating_add(1)..).unwrap_or(&[]), pattern)
                .map(|i| from + 1 + i)
                .or_else(|| find(bytes, pattern))
        } else {
            rfind(bytes.get(..from).unwrap_or(&[]), pattern).or_else(|| rfind(bytes, pattern))
        };
        match found {
            Some(at) => {
                let matched = pattern.len() as u64;
                self.jump(at as u64, bytes.len() as u64);
                self.match_len = matched;
                format!("match at {at:#x}")
            }
            None => {
                self.match_len = 0;
                "not found".into()
            }
        }
    }
}

// memchr's SIMD searcher: hundreds of MB in tens of milliseconds, inside
// one frame (a byte-by-byte window scan froze the UI for seconds).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(haystack, needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::rfind(haystack, needle)
}
