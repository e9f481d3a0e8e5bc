//! Container round trips, the corruption matrix, hostile headers and a writer
//! killed mid-write.

use std::path::{Path, PathBuf};

use expertui::format::layout::*;
use expertui::format::reader::ReaderOptions;
use expertui::format::{
    Codec, ExpertReader, ExpertWriter, FormatError, SectionSpec, SectionType, WriterOptions,
};
use proptest::prelude::*;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

fn write_file(path: &Path, sections: &[(SectionSpec, Vec<u8>)], alignment: u64) {
    let mut w = ExpertWriter::create(
        path,
        WriterOptions {
            alignment,
            zstd_level: 3,
        },
    )
    .unwrap();
    for (spec, data) in sections {
        w.add_section(spec.clone(), data).unwrap();
    }
    w.finish().unwrap();
}

/// A small file with three sections of different codecs.
fn small_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("small.expert");
    let text = b"{\"name\":\"demo\",\"version\":\"0.1.0\"}".repeat(4);
    let floats: Vec<u8> = (0..512u32)
        .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
        .collect();
    write_file(
        &path,
        &[
            (
                SectionSpec::new(SectionType::Manifest, "manifest.json").codec(Codec::Zstd),
                text,
            ),
            (
                SectionSpec::new(SectionType::Tensors, "layer.0").layer(0),
                floats.clone(),
            ),
            (
                SectionSpec::new(SectionType::Tensors, "layer.1")
                    .layer(1)
                    .codec(Codec::ShuffleZstd { element_size: 4 }),
                floats,
            ),
        ],
        64,
    );
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn codec_strategy() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::None),
        Just(Codec::Zstd),
        Just(Codec::ShuffleZstd { element_size: 2 }),
        Just(Codec::ShuffleZstd { element_size: 4 }),
        Just(Codec::ShuffleZstd { element_size: 8 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_section_sets_round_trip(
        sections in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..3000), codec_strategy(), any::<bool>(), 0u16..20), 0..8),
        align_256 in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.expert");
        let alignment = if align_256 { GPU_ALIGNMENT } else { BASE_ALIGNMENT };
        let mut w = ExpertWriter::create(&path, WriterOptions { alignment, zstd_level: 1 }).unwrap();
        for (i, (data, codec, big, kind)) in sections.iter().enumerate() {
            let spec = SectionSpec::new(SectionType::from_code(*kind + 1), format!("s{i}")).codec(*codec).align_256(*big);
            // Streamed: no fallback to uncompressed, so every codec is exercised.
            let mut s = w.begin_section(spec).unwrap();
            std::io::Write::write_all(&mut s, data).unwrap();
            s.finish().unwrap();
        }
        w.finish().unwrap();
        let r = ExpertReader::open(&path).unwrap();
        r.verify_all().unwrap();
        prop_assert_eq!(r.sections().len(), sections.len());
        for (i, (data, codec, big, _)) in sections.iter().enumerate() {
            let info = &r.sections()[i];
            prop_assert_eq!(info.codec, Some(*codec));
            let align = if *big { GPU_ALIGNMENT } else { alignment };
            prop_assert_eq!(info.offset % align, 0);
            prop_assert_eq!(&*r.section(i).unwrap(), data.as_slice());
        }
    }
}

#[test]
fn uncompressed_sections_are_zero_copy_slices_of_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_file(dir.path());
    let r = ExpertReader::open(&path).unwrap();
    let info = r.find(SectionType::Tensors, "layer.0").unwrap().clone();
    let data = r.section(info.index).unwrap();
    let file = r.bytes();
    assert_eq!(data.as_ptr(), file[info.offset as usize..].as_ptr());
    assert_eq!(
        data.as_ptr() as usize % 64,
        0,
        "64-byte aligned in memory too"
    );
}

#[test]
fn incompressible_sections_fall_back_to_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.expert");
    let mut state = 0x9E3779B97F4A7C15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    write_file(
        &path,
        &[(
            SectionSpec::new(SectionType::Blob, "noise").codec(Codec::Zstd),
            noise.clone(),
        )],
        64,
    );
    let r = ExpertReader::open(&path).unwrap();
    assert_eq!(r.sections()[0].codec, Some(Codec::None));
    assert_eq!(&*r.section(0).unwrap(), noise.as_slice());
}

#[test]
fn every_header_and_toc_bit_flip_is_caught_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_file(dir.path());
    let header = Header::read_from_prefix(&bytes).unwrap().0;
    let toc_start = header.toc_offset.get() as usize;
    let ranges = [0..HEADER_SIZE, toc_start..bytes.len()];
    let mut flips = 0;
    for range in ranges {
        for byte in range {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                let result = ExpertReader::from_vec(damaged, ReaderOptions::default());
                assert!(
                    result.is_err(),
                    "flip of bit {bit} at byte {byte} not caught"
                );
                flips += 1;
            }
        }
    }
    assert_eq!(flips, (HEADER_SIZE + bytes.len() - toc_start) * 8);
}

#[test]
fn a_flip_in_section_bytes_names_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_file(dir.path());
    let clean = ExpertReader::from_vec(bytes.clone(), ReaderOptions::default()).unwrap();
    let sections = clean.sections().to_vec();
    let toc_start = clean.header().toc_offset.get() as usize;
    for byte in HEADER_SIZE..toc_start {
        let mut damaged = bytes.clone();
        damaged[byte] ^= 0x10;
        // Structure and root only cover header and TOC: opening still works.
        let r = ExpertReader::from_vec(damaged, ReaderOptions::default()).unwrap();
        let err = r.verify_all().unwrap_err();
        match sections
            .iter()
            .find(|s| (s.offset..s.end()).contains(&(byte as u64)))
        {
            Some(s) => match err {
                FormatError::DigestMismatch {
                    index, offset, end, ..
                } => {
                    assert_eq!(index, s.index);
                    assert_eq!((offset, end), (s.offset, s.end()));
                }
                other => panic!("byte {byte}: {other}"),
            },
            None => assert!(
                matches!(
                    err,
                    FormatError::DirtyPadding { .. } | FormatError::BadHeader { .. }
                ),
                "padding byte {byte}: {err}"
            ),
        }
    }
}

#[test]
fn truncation_at_every_offset_gives_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_file(dir.path());
    for len in 0..bytes.len() {
        let err = ExpertReader::from_vec(bytes[..len].to_vec(), ReaderOptions::default())
            .err()
            .unwrap();
        assert!(err.is_corruption(), "len {len}: {err}");
        assert!(
            matches!(
                err,
                FormatError::BadMagic { .. }
                    | FormatError::Truncated { .. }
                    | FormatError::FileSizeMismatch { .. }
            ),
            "len {len}: {err}"
        );
    }
}

/// Rewrites header and TOC with `edit`, then re-seals the root digest so only
/// the structure checks can object.
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
    out[toc_start..].copy_from_slice(&toc_bytes);
    out
}

fn open_err(bytes: Vec<u8>) -> FormatError {
    ExpertReader::from_vec(bytes, ReaderOptions::default())
        .err()
        .expect("must be refused")
}

type ErrorCheck = Box<dyn Fn(&FormatError) -> bool>;

#[test]
fn hostile_headers_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_file(dir.path());
    let cases: Vec<(&str, ErrorCheck, Vec<u8>)> = vec![
        (
            "length near 2^64",
            Box::new(|e| matches!(e, FormatError::SectionOutOfBounds { .. })),
            hostile(&bytes, |_, t| {
                t[1].stored_len = U64::new(u64::MAX - 8);
                t[1].raw_len = t[1].stored_len;
            }),
        ),
        (
            "raw length lie",
            Box::new(|e| matches!(e, FormatError::BadEntry { .. })),
            hostile(&bytes, |_, t| t[1].raw_len = U64::new(u64::MAX)),
        ),
        (
            "offset past EOF",
            Box::new(|e| {
                matches!(
                    e,
                    FormatError::Misaligned { .. } | FormatError::SectionOutOfBounds { .. }
                )
            }),
            hostile(&bytes, |_, t| t[2].offset = U64::new(1 << 40)),
        ),
        (
            "overlap",
            Box::new(|e| matches!(e, FormatError::SectionOverlap { .. })),
            hostile(&bytes, |_, t| t[1].offset = t[0].offset),
        ),
        (
            "misaligned",
            Box::new(|e| matches!(e, FormatError::Misaligned { .. })),
            hostile(&bytes, |_, t| t[1].offset = U64::new(t[1].offset.get() + 8)),
        ),
        (
            "huge toc count",
            Box::new(|e| matches!(e, FormatError::TocOutOfBounds { .. })),
            hostile(&bytes, |h, _| h.toc_count = U32::new(u32::MAX)),
        ),
        (
            "toc offset overflow",
            Box::new(|e| matches!(e, FormatError::TocOutOfBounds { .. })),
            hostile(&bytes, |h, _| h.toc_offset = U64::new(u64::MAX - 64)),
        ),
        (
            "huge entry size",
            Box::new(|e| matches!(e, FormatError::BadHeader { .. })),
            hostile(&bytes, |h, _| h.toc_entry_size = U32::new(u32::MAX)),
        ),
        (
            "future major",
            Box::new(|e| matches!(e, FormatError::UnsupportedVersion { major: 3, .. })),
            hostile(&bytes, |h, _| h.version_major = 3.into()),
        ),
        (
            "required feature",
            Box::new(|e| matches!(e, FormatError::UnsupportedFeatures { .. })),
            hostile(&bytes, |h, _| h.flags = U64::new(1 << 40)),
        ),
        (
            "duplicate id",
            Box::new(|e| matches!(e, FormatError::BadEntry { .. })),
            hostile(&bytes, |_, t| t[1].section_id = t[0].section_id),
        ),
        (
            "bad name",
            Box::new(|e| matches!(e, FormatError::BadEntry { .. })),
            hostile(&bytes, |_, t| t[0].name[0] = 0xff),
        ),
        (
            "unknown codec",
            Box::new(|e| matches!(e, FormatError::BadEntry { .. })),
            hostile(&bytes, |_, t| t[0].codec = 9),
        ),
        (
            "unknown critical",
            Box::new(|e| matches!(e, FormatError::UnknownCriticalSection { .. })),
            hostile(&bytes, |_, t| {
                t[0].section_type = 999.into();
                t[0].flags = ENTRY_FLAG_CRITICAL;
            }),
        ),
        (
            "signature index",
            Box::new(|e| {
                matches!(
                    e,
                    FormatError::BadHeader {
                        field: "signature_index",
                        ..
                    }
                )
            }),
            hostile(&bytes, |h, _| h.signature_index = U32::new(0)),
        ),
    ];
    for (label, expected, data) in cases {
        let err = open_err(data);
        assert!(expected(&err), "{label}: got {err}");
        assert!(err.is_corruption(), "{label}");
    }
    // A lying raw length on a compressed section opens, then fails to decode.
    let lying = hostile(&bytes, |_, t| {
        t[0].raw_len = U64::new(t[0].raw_len.get() + 1)
    });
    let r = ExpertReader::from_vec(lying, ReaderOptions::default()).unwrap();
    assert!(matches!(
        r.section(0).unwrap_err(),
        FormatError::RawLengthMismatch { .. }
    ));
}

#[test]
fn unknown_section_types_from_newer_minors_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_file(dir.path());
    let newer = hostile(&bytes, |h, t| {
        h.version_minor = 7.into();
        t[2].section_type = 4000.into();
    });
    let r = ExpertReader::from_vec(newer, ReaderOptions::default()).unwrap();
    assert_eq!(r.sections()[2].kind, SectionType::Unknown(4000));
    assert!(!r.sections()[2].kind.is_known());
}

#[test]
fn text_mode_damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = small_file(dir.path());
    let mut crlf_to_lf = bytes.clone();
    crlf_to_lf.remove(4);
    match open_err(crlf_to_lf) {
        FormatError::BadMagic { hint: Some(h), .. } => assert!(h.contains("text-mode")),
        other => panic!("{other}"),
    }
}

#[test]
fn bad_root_is_reported_but_can_be_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut bytes) = small_file(dir.path());
    bytes[60] ^= 1; // inside the root digest field
    assert!(matches!(
        open_err(bytes.clone()),
        FormatError::RootMismatch { .. }
    ));
    let lenient = ReaderOptions {
        check_root: false,
        ..Default::default()
    };
    let r = ExpertReader::from_vec(bytes, lenient).unwrap();
    assert!(r.check_root().is_err());
}

#[test]
fn writer_refuses_bad_names_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut w =
        ExpertWriter::create(dir.path().join("x.expert"), WriterOptions::default()).unwrap();
    assert!(matches!(
        w.add_section(SectionSpec::new(SectionType::Blob, "a".repeat(57)), b"x"),
        Err(FormatError::InvalidName { .. })
    ));
    assert!(matches!(
        w.add_section(SectionSpec::new(SectionType::Blob, ""), b"x"),
        Err(FormatError::InvalidName { .. })
    ));
    w.add_section(SectionSpec::new(SectionType::Blob, "a"), b"x")
        .unwrap();
    assert!(w
        .add_section(SectionSpec::new(SectionType::Blob, "a"), b"y")
        .is_err());
}

#[test]
fn dropped_writer_leaves_no_file_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = small_file(dir.path());
    {
        let mut w = ExpertWriter::create(&path, WriterOptions::default()).unwrap();
        w.add_section(SectionSpec::new(SectionType::Blob, "half"), &[1; 1000])
            .unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "temp file removed");
}

const CHILD_ENV: &str = "EXPERTUI_TEST_SLOW_WRITER";

/// Run as a child process by `killed_writer_leaves_previous_file_intact`.
#[test]
fn slow_writer_child() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut w = ExpertWriter::create(&target, WriterOptions::default()).unwrap();
    for i in 0.. {
        w.add_section(
            SectionSpec::new(SectionType::Blob, format!("s{i}")),
            &[7; 1 << 16],
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn killed_writer_leaves_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = small_file(dir.path());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "slow_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child's temp file has grown, then kill it mid-write.
    let start = std::time::Instant::now();
    loop {
        let temp_size: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        if temp_size > 1 << 20 || start.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "previous file untouched"
    );
    ExpertReader::open(&path).unwrap().verify_all().unwrap();
}

#[test]
fn copying_every_section_reproduces_the_file_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = small_file(dir.path());
    let reader = ExpertReader::open(&path).unwrap();
    let copy = dir.path().join("copy.expert");
    let mut w = ExpertWriter::create(&copy, WriterOptions::default()).unwrap();
    for i in 0..reader.sections().len() {
        w.copy_section(&reader, i).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), before);
}
