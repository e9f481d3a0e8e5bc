//! Resource limits against the worst inputs we could build: decompression
//! bombs (container sections, legacy tar.gz, OSD sparse payloads), tables of
//! contents with huge counts and lengths, deeply nested manifest JSON and
//! GBNF grammars. Memory is measured with a counting global allocator (peak
//! bytes live during the call, above what was live before it); every bound
//! is a small multiple of the input size plus a constant. No wall-clock
//! assertion anywhere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use expertui::format::layout::{Header, TocEntry, HEADER_SIZE, TOC_ENTRY_SIZE};
use expertui::format::legacy::{read_legacy, LegacyError, LegacyLimits};
use expertui::format::{
    Codec, ExpertReader, ExpertWriter, FormatError, ReaderLimits, ReaderOptions, SectionSpec,
    SectionType, WriterOptions,
};
use zerocopy::{FromBytes, IntoBytes};

// ---------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Counted as old + new at the moment of the move (the worst case).
            grew(new_size);
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are process-wide: every test holds this lock for its whole
/// run, so no other test allocates while one measures.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` and returns its result with the peak bytes allocated during it
/// (above what was live when it started).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    let peak = PEAK.load(Ordering::SeqCst).saturating_sub(base);
    (out, peak)
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Asserts `peak <= factor * input + constant` and returns the multiple.
fn assert_bounded(what: &str, peak: usize, input: usize, factor: usize, constant: usize) {
    let bound = factor * input + constant;
    eprintln!(
        "{what}: input {input} B, peak allocation {peak} B ({:.2}x input; bound {factor}x + {constant})",
        peak as f64 / input.max(1) as f64
    );
    assert!(
        peak <= bound,
        "{what}: peak allocation {peak} B over {factor} x {input} + {constant}"
    );
}

// ---------------------------------------------------------------------------
// Bomb builders
// ---------------------------------------------------------------------------

/// A zstd frame of `total` zero bytes made of RLE blocks (4 bytes per
/// 128 KiB: about 32768:1) without a content size in its header.
fn rle_bomb(total: u64) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Descriptor: no content size, not single-segment, no checksum, no
    // dictionary; window 128 KiB (exponent 7: 2^(10+7)).
    out.extend_from_slice(&[0x00, 7 << 3]);
    let mut left = total;
    while left > 0 {
        let size = left.min(BLOCK);
        left -= size;
        let last = u32::from(left == 0);
        let header = last | (1 << 1) | ((size as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

#[test]
fn the_rle_bomb_really_expands() {
    let _serial = serial();
    let mut out = Vec::new();
    let n = std::io::copy(
        &mut zstd::stream::read::Decoder::new(&rle_bomb(3 << 20)[..]).unwrap(),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 3 << 20);
    assert!(out.iter().all(|&b| b == 0));
}

/// A valid file whose single section holds `stored` uncompressed.
fn file_with(stored: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.expert");
    let mut w = ExpertWriter::create(&path, WriterOptions::default()).unwrap();
    w.add_section(SectionSpec::new(SectionType::Blob, "bomb"), stored)
        .unwrap();
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// Rewrites header and TOC with `edit`, then re-seals the root digest so
/// only the limits can object.
fn hostile(bytes: &[u8], edit: impl FnOnce(&mut Header, &mut Vec<TocEntry>)) -> Vec<u8> {
    let mut header = Header::read_from_prefix(bytes).unwrap().0;
    let toc_start = header.toc_offset.get() as usize;
    let mut toc: Vec<TocEntry> = bytes[toc_start..]
        .chunks(TOC_ENTRY_SIZE)
        .map(|c| TocEntry::read_from_bytes(c).unwrap())
        .collect();
    edit(&mut header, &mut toc);
    let toc_bytes: Vec<u8> = toc.iter().flat_map(|e| e.as_bytes().to_vec()).collect();
    header.root_digest = expertui::format::digests::root_digest(header.as_bytes(), &toc_bytes);
    let mut out = bytes.to_vec();
    out[..HEADER_SIZE].copy_from_slice(header.as_bytes());
    out.truncate(toc_start);
    out.extend_from_slice(&toc_bytes);
    out
}

/// A file whose section 0 is the zstd stream `frame`, declaring `declared`
/// decoded bytes.
fn zstd_bomb_file(frame: &[u8], declared: u64) -> Vec<u8> {
    hostile(&file_with(frame), |_, toc| {
        toc[0].codec = Codec::Zstd.code();
        toc[0].raw_len.set(declared);
    })
}

fn decode_section(bytes: Vec<u8>, limits: ReaderLimits) -> Result<usize, FormatError> {
    let reader = ExpertReader::from_vec(
        bytes,
        ReaderOptions {
            limits,
            ..Default::default()
        },
    )?;
    reader.section(0).map(|s| s.len())
}

// ---------------------------------------------------------------------------
// Container sections
// ---------------------------------------------------------------------------

#[test]
fn zstd_section_bombs_are_refused_without_allocating_them() {
    let _serial = serial();
    // 1 GiB of zeros in 32 KiB of stored bytes.
    let frame = rle_bomb(1 << 30);
    let input = frame.len() + 4 * KIB;

    // Declares 8 GiB: over the default 4 GiB limit, refused before decoding.
    let file = zstd_bomb_file(&frame, 8 << 30);
    let (r, peak) = peak_of(|| decode_section(file, ReaderLimits::default()));
    assert!(
        matches!(
            r,
            Err(FormatError::SectionTooLarge { .. } | FormatError::DecodedBudget { .. })
        ),
        "{r:?}"
    );
    assert_bounded("zstd section declaring 8 GiB", peak, input, 4, 64 * KIB);

    // Declares 1 MiB, really 1 GiB: decoding stops one byte past 1 MiB.
    let file = zstd_bomb_file(&frame, 1 << 20);
    let (r, peak) = peak_of(|| decode_section(file, ReaderLimits::default()));
    assert!(
        matches!(
            r,
            Err(FormatError::RawLengthMismatch {
                truncated_output: true,
                ..
            })
        ),
        "{r:?}"
    );
    assert_bounded(
        "zstd section declaring 1 MiB, holding 1 GiB",
        peak,
        input,
        4,
        4 * MIB,
    );

    // Declares and holds 1 GiB, reader limited to 16 MiB: refused up front.
    let file = zstd_bomb_file(&frame, 1 << 30);
    let limits = ReaderLimits {
        max_section_bytes: 16 << 20,
        max_decoded_total: Some(u64::MAX),
        ..Default::default()
    };
    let (r, peak) = peak_of(|| decode_section(file, limits));
    assert!(
        matches!(r, Err(FormatError::SectionTooLarge { .. })),
        "{r:?}"
    );
    assert_bounded(
        "zstd section of 1 GiB over a 16 MiB limit",
        peak,
        input,
        4,
        64 * KIB,
    );

    // Within the limit the reader honours the declared size, and costs at
    // most twice it (decode buffer plus the shared copy).
    let small = rle_bomb(32 << 20);
    let file = zstd_bomb_file(&small, 32 << 20);
    let limits = ReaderLimits {
        max_section_bytes: 64 << 20,
        cache_bytes: 0,
        ..Default::default()
    };
    let (r, peak) = peak_of(|| decode_section(file, limits));
    assert_eq!(r.unwrap(), 32 << 20);
    assert_bounded(
        "honest 32 MiB section, 64 MiB limit",
        peak,
        32 << 20,
        2,
        MIB,
    );
}

#[test]
fn tables_of_contents_with_huge_counts_and_lengths_are_refused() {
    let _serial = serial();
    let base = file_with(&[7; 4096]);
    let input = base.len();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "toc_count u32::MAX",
            hostile(&base, |h, _| h.toc_count.set(u32::MAX)),
        ),
        (
            "toc_count u32::MAX, 4 KiB entries",
            hostile(&base, |h, _| {
                h.toc_count.set(u32::MAX);
                h.toc_entry_size.set(4096);
            }),
        ),
        (
            "stored_len u64::MAX",
            hostile(&base, |_, t| t[0].stored_len.set(u64::MAX)),
        ),
        (
            "offset near u64::MAX",
            hostile(&base, |_, t| t[0].offset.set(u64::MAX - 63)),
        ),
        (
            "raw_len u64::MAX, zstd",
            hostile(&base, |_, t| {
                t[0].codec = Codec::Zstd.code();
                t[0].raw_len.set(u64::MAX);
            }),
        ),
        (
            "file_size u64::MAX",
            hostile(&base, |h, _| h.file_size.set(u64::MAX)),
        ),
    ];
    for (what, bytes) in cases {
        let (r, peak) = peak_of(|| decode_section(bytes, ReaderLimits::default()));
        assert!(r.is_err(), "{what}: accepted");
        assert_bounded(what, peak, input, 4, 64 * KIB);
    }
}

// ---------------------------------------------------------------------------
// Legacy tar.gz
// ---------------------------------------------------------------------------

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A tar header block for a regular file `name` of `size` bytes.
fn tar_header(name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn legacy_bombs_are_refused_within_their_limits() {
    let _serial = serial();
    // A header declaring 3 GiB (under the default 4 GiB per file) and 1 KiB
    // of data: the reader must not reserve the declared size.
    let mut tar = tar_header("manifest.json", 3 << 30);
    tar.extend_from_slice(&[b'{'; 1024]);
    let gz = gzip(&tar);
    let input = gz.len();
    let (r, peak) = peak_of(|| read_legacy(&gz, &LegacyLimits::default()));
    assert!(
        matches!(r, Err(LegacyError::TruncatedEntry { .. })),
        "{r:?}"
    );
    assert_bounded("tar entry declaring 3 GiB", peak, input, 4, 2 * MIB);

    // 64 MiB of real zeros behind a 64 MiB header, 8 MiB allowed in all.
    let mut tar = tar_header("weights.bin", 64 << 20);
    tar.resize(tar.len() + (64 << 20) + 1024, 0);
    let gz = gzip(&tar);
    drop(tar);
    let input = gz.len();
    let limits = LegacyLimits {
        max_total_bytes: 8 << 20,
        ..Default::default()
    };
    let (r, peak) = peak_of(|| read_legacy(&gz, &limits));
    assert!(matches!(r, Err(LegacyError::TotalTooLarge { .. })), "{r:?}");
    assert_bounded("64 MiB gzip bomb, 8 MiB limit", peak, input, 4, 2 * MIB);

    // Twenty thousand empty entries against the 10 000 entry limit.
    let mut tar = Vec::new();
    for i in 0..20_000 {
        tar.extend_from_slice(&tar_header(&format!("f{i}"), 0));
    }
    tar.resize(tar.len() + 1024, 0);
    let gz = gzip(&tar);
    drop(tar);
    let input = gz.len();
    let (r, peak) = peak_of(|| read_legacy(&gz, &LegacyLimits::default()));
    assert!(
        matches!(r, Err(LegacyError::TooManyEntries { .. })),
        "{r:?}"
    );
    // Bounded by the entry limit (names and bookkeeping), not the input.
    assert_bounded("20 000 entries, 10 000 allowed", peak, input, 16, 4 * MIB);
}

// ---------------------------------------------------------------------------
// Recursive parsers: manifest JSON, GBNF
// ---------------------------------------------------------------------------

/// Runs `f` on a thread with a small stack (1 MiB, half a default spawned
/// thread's): a recursion without a depth limit overflows it and aborts the
/// whole test binary.
const STACK: usize = 2 * MIB;

fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn deeply_nested_manifest_json_is_an_error_not_a_crash() {
    let _serial = serial();
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        for depth in [200usize, 100_000] {
            let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let input = text.len();
            let (r, peak) = on_small_stack(move || {
                peak_of(|| {
                    expertui::format::manifest::validate_manifest_bytes(text.as_bytes())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            });
            let e = r.expect_err("a nested array is no manifest");
            assert!(!e.is_empty());
            assert_bounded(
                &format!("manifest nested {depth} deep ({open})"),
                peak,
                input,
                16,
                MIB,
            );
        }
    }
}

#[test]
fn deeply_nested_grammars_are_an_error_not_a_crash() {
    let _serial = serial();
    use expertui::format::grammar::{parse_gbnf, GrammarError, MAX_NESTING};
    // At the limit: accepted, on the small stack.
    let at_limit = format!(
        "root ::= {}\"a\"{}\n",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    let (r, _) = on_small_stack(move || peak_of(|| parse_gbnf(&at_limit).map(|_| ())));
    r.unwrap();
    for depth in [MAX_NESTING + 1, 100_000, 1_000_000] {
        let text = format!("root ::= {}\"a\"{}\n", "(".repeat(depth), ")".repeat(depth));
        let input = text.len();
        let (r, peak) = on_small_stack(move || peak_of(|| parse_gbnf(&text).map(|_| ())));
        assert!(
            matches!(r, Err(GrammarError::TooDeep { .. })),
            "{depth}: {r:?}"
        );
        assert_bounded(&format!("grammar nested {depth} deep"), peak, input, 8, MIB);
    }
    // Nested repetitions: each level refers to the group below (as
    // llama.cpp builds them), so 100^3 matches cost no 100^3 rules.
    let text = "root ::= (((\"a\"){100}){100}){100}\n".to_string();
    let input = text.len();
    let (r, peak) = on_small_stack(move || peak_of(|| parse_gbnf(&text).map(|_| ())));
    r.unwrap();
    assert_bounded("nested repetitions {100}^3", peak, input, 8, MIB);
    // A count over llama.cpp's limit (a maximum over it means "no maximum").
    let text = "root ::= \"a\"{4000000000}\n".to_string();
    let (r, _) = on_small_stack(move || peak_of(|| parse_gbnf(&text).map(|_| ())));
    assert!(matches!(r, Err(GrammarError::Repetition { .. })), "{r:?}");
    // A long alternation and a long sequence: linear.
    for text in [
        format!("root ::= {}\n", vec!["\"a\""; 200_000].join(" | ")),
        format!("root ::= {}\n", vec!["[a-z]"; 200_000].join(" ")),
    ] {
        let input = text.len();
        let copy = text.clone();
        let (r, peak) = on_small_stack(move || peak_of(|| parse_gbnf(&text).map(|_| ())));
        r.unwrap();
        assert_bounded("200 000 alternatives or items", peak, input, 64, MIB);
        // The checker that reads on past problems: same bounds.
        let (issues, peak) = on_small_stack(move || {
            peak_of(|| expertui::format::grammar::check_gbnf(&copy).issues.len())
        });
        assert_eq!(issues, 0);
        assert_bounded(
            "check_gbnf: 200 000 alternatives or items",
            peak,
            input,
            64,
            MIB,
        );
    }
    // A left-recursive chain 100 000 rules long: iterative, bounded.
    let text: String = (0..100_000)
        .map(|i| format!("r{i} ::= r{} \"x\"\n", (i + 1) % 100_000))
        .collect::<String>()
        + "root ::= r0\n";
    let input = text.len();
    let (issues, peak) = on_small_stack(move || {
        peak_of(|| expertui::format::grammar::check_gbnf(&text).issues.len())
    });
    assert_eq!(issues, 100_000, "every rule of the cycle is reported");
    assert_bounded("check_gbnf: 100 000-rule cycle", peak, input, 256, MIB);
}

// ---------------------------------------------------------------------------
// OSD sections
// ---------------------------------------------------------------------------

/// A CSR header (see src/osd/csr.rs) followed by `payload`.
fn csr_bytes(rows: u64, cols: u64, nnz: u64, zstd: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = b"OCSR".to_vec();
    out.extend_from_slice(&[1, u8::from(zstd), 1, 1]);
    for v in [rows, cols, nnz, payload.len() as u64] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

#[test]
fn osd_payloads_with_huge_declared_dims_are_refused() {
    let _serial = serial();
    use expertui::osd::section::decode_layer;
    use expertui::osd::Csr;

    // 64 Mi rows of length 0: 64 MiB of row lengths in 2 KiB of zstd, and
    // 512 MiB of row pointers if it were believed.
    let bomb = csr_bytes(64 << 20, 1, 0, true, &rle_bomb(64 << 20));
    let input = bomb.len();
    let (r, peak) = peak_of(|| Csr::from_bytes(&bomb).map(|_| ()));
    assert!(r.is_err(), "CSR bomb accepted");
    assert_bounded("CSR of 64 Mi empty rows in 2 KiB", peak, input, 64, MIB);

    // u32::MAX rows and columns, nothing behind them.
    let dims = csr_bytes(
        u64::from(u32::MAX),
        u64::from(u32::MAX),
        1 << 40,
        false,
        &[],
    );
    let (r, peak) = peak_of(|| Csr::from_bytes(&dims).map(|_| ()));
    assert!(r.is_err());
    assert_bounded("CSR declaring u32::MAX dims", peak, dims.len(), 4, 64 * KIB);

    // An OSD layer section declaring u32::MAX modules.
    let mut layer = b"OSDL".to_vec();
    layer.extend_from_slice(&1u16.to_le_bytes());
    layer.extend_from_slice(&u32::MAX.to_le_bytes());
    layer.resize(4096, 0);
    let (r, peak) = peak_of(|| decode_layer(&layer).map(|_| ()));
    assert!(r.is_err());
    assert_bounded(
        "OSD layer declaring u32::MAX modules",
        peak,
        layer.len(),
        4,
        64 * KIB,
    );

    // An honest CSR still round-trips, compressed.
    let dense =
        expertui::osd::Matrix::new(64, 64, (0..64 * 64).map(|i| (i % 7) as f32).collect()).unwrap();
    let csr = Csr::from_dense(&dense).unwrap();
    let back = Csr::from_bytes(&csr.to_bytes(true).unwrap()).unwrap();
    assert_eq!(back.to_dense().data, dense.data);
}

// ---------------------------------------------------------------------------
// Small files cannot force gigabytes: the decoded-bytes budget, through the
// real binary, measured as the children's peak RSS.
// ---------------------------------------------------------------------------

/// A file whose sections are the given zstd frames, each retyped and
/// declaring `declared` decoded bytes.
fn zstd_sections_file(frames: &[(SectionType, &[u8], u64)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.expert");
    let mut w = ExpertWriter::create(&path, WriterOptions::default()).unwrap();
    for (i, (_, frame, _)) in frames.iter().enumerate() {
        w.add_section(SectionSpec::new(SectionType::Blob, format!("s{i}")), frame)
            .unwrap();
    }
    w.finish().unwrap();
    hostile(&std::fs::read(&path).unwrap(), |_, toc| {
        for (entry, (kind, _, declared)) in toc.iter_mut().zip(frames) {
            entry.section_type.set(kind.code());
            entry.codec = Codec::Zstd.code();
            entry.raw_len.set(*declared);
        }
    })
}

/// Peak RSS of every child this process has waited for, in bytes.
#[cfg(target_os = "linux")]
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct we pass; no other memory involved.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    (usage.ru_maxrss as u64) * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn small_bombs_stay_under_256_mb_rss_and_exit_3() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let manifest_bomb = rle_bomb(4 << 30);
    let tensor_bomb = rle_bomb(2 << 30);
    let files = [
        (
            "manifest-4g.expert",
            zstd_sections_file(&[(SectionType::Manifest, &manifest_bomb, 4 << 30)]),
        ),
        (
            "tensors-3x2g.expert",
            zstd_sections_file(&[
                (SectionType::Tensors, &tensor_bomb, 2 << 30),
                (SectionType::Tensors, &tensor_bomb, 2 << 30),
                (SectionType::Tensors, &tensor_bomb, 2 << 30),
            ]),
        ),
    ];
    let bin = env!("CARGO_BIN_EXE_expertui");
    for (name, bytes) in &files {
        assert!(bytes.len() < 1 << 20, "{name}: {} bytes", bytes.len());
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let out_file = dir.path().join("out.expert");
        let o = out_file.to_str().unwrap();
        for args in [
            vec!["--headless", "validate", p],
            vec!["--headless", "validate", p, "--verify-integrity"],
            vec!["--headless", "info", p],
            vec![p],
            vec!["--headless", "convert", p, "-o", o],
        ] {
            let out = std::process::Command::new(bin)
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{name} {args:?}: {err}");
            assert!(!out_file.exists());
        }
    }
    // A legacy package whose member declares 4 GiB.
    let mut header = tar::Header::new_gnu();
    header.set_path("manifest.json").unwrap();
    header.set_size(4 << 30);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar_bytes = header.as_bytes().to_vec();
    tar_bytes.extend(std::iter::repeat_n(0u8, 1 << 20));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let legacy = dir.path().join("legacy-4g.expert");
    std::fs::write(&legacy, gz.finish().unwrap()).unwrap();
    for args in [
        vec!["--headless", "validate", legacy.to_str().unwrap()],
        vec![
            "--headless",
            "convert",
            legacy.to_str().unwrap(),
            "-o",
            dir.path().join("l.expert").to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let peak = children_peak_rss();
    eprintln!("peak RSS of the children: {} MB", peak >> 20);
    assert!(peak < 256 << 20, "peak RSS {} MB", peak >> 20);

    // --max-decoded raises the budget for a trusted file: the 4 GiB
    // manifest is then refused by the text cap, still without allocating it.
    let path = dir.path().join("manifest-4g.expert");
    let out = std::process::Command::new(bin)
        .args([
            "--headless",
            "--max-decoded",
            "8G",
            "validate",
            path.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["findings"][0]["code"] == "container.section-too-large",
        "{v}"
    );
}
