//! Fault injection through the real binary: writers killed (SIGKILL) at
//! pseudo-random points, writes that hit a full disk (the file size limit,
//! `RLIMIT_FSIZE`), and files truncated or replaced while they are mapped.
//!
//! Killed writers run with the test hook `EXPERTUI_TEST_WRITE_DELAY_US`
//! (see `src/format/atomic.rs`), which cuts every output write into 16 KiB
//! pieces and sleeps before each, so that most kill points land while the
//! temp file is being written. After every kill the target must be the old
//! file byte for byte or the complete new file (it validates with
//! `--verify-integrity`), and nothing but `.<target>.*.tmp` files may be left.
#![cfg(unix)]

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use expertui::format::{ExpertReader, FormatError};

const LEGACY: &str = "tests/fixtures/minilm-sql-dora.v0.3.0.expert";
const DORA: &str = "tests/fixtures/minilm-dora-r8";
const LORA: &str = "tests/fixtures/minilm-lora-r8";
const IA3: &str = "tests/fixtures/minilm-ia3";

/// Delay per 16 KiB piece of output in the killed runs.
const WRITE_DELAY_US: &str = "4000";
/// Fixed seed: the same kill points on every run.
const SEED: u64 = 0x5eed_0ffa;
/// Kill iterations per verb: at least `MIN_ITER`, more (up to `MAX_ITER`)
/// until `WANT_MID` kills landed mid-write.
const MIN_ITER: usize = 10;
const MAX_ITER: usize = 40;
const WANT_MID: usize = 4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("expertui")
}

fn expertui(args: &[OsString]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("EXPERTUI_TEST_WRITE_DELAY_US")
        .arg("--headless")
        .args(args);
    cmd
}

fn os(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    items.iter().map(|s| s.as_ref().to_os_string()).collect()
}

/// Runs to completion and checks it succeeded.
fn run_ok(args: &[OsString]) {
    let out = expertui(args).output().unwrap();
    assert!(
        out.status.success(),
        "expertui {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SplitMix64: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Temp files of `target` (`.<name>.expertui-<random>.tmp`) in its folder.
fn temps_of(target: &Path) -> Vec<PathBuf> {
    let name = target.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!(".{name}.expertui-");
    std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".tmp")
        })
        .collect()
}

/// Every file in `dir` is either expected or a temp file of `target`.
fn assert_only_expected(dir: &Path, target: &Path, expected: &[&Path]) {
    let temps = temps_of(target);
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        assert!(
            expected.iter().any(|e| *e == p) || temps.contains(&p),
            "stray file {} beside {}",
            p.display(),
            target.display()
        );
    }
}

fn validates(path: &Path) -> bool {
    let out = expertui(&os(&[&"validate", &"--verify-integrity", &path]))
        .output()
        .unwrap();
    out.status.success()
}

/// One verb under test: the command, the target it replaces, the old bytes
/// to put back before each run and the other files its folder holds.
struct Case {
    name: &'static str,
    args: Vec<OsString>,
    target: PathBuf,
    old: Vec<u8>,
    keep: Vec<PathBuf>,
}

/// Builds the four cases in `dir` (one sub-folder each).
fn cases(dir: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    let sub = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };

    // package: the old target is another adapter's expert.
    let d = sub("package");
    let target = d.join("out.expert");
    run_ok(&os(&[&"package", &IA3, &"-o", &target, &"--no-sidecar"]));
    out.push(Case {
        name: "package",
        args: os(&[&"package", &DORA, &"-o", &target, &"--no-sidecar"]),
        old: std::fs::read(&target).unwrap(),
        target,
        keep: Vec::new(),
    });

    // convert: legacy tar.gz over a packaged LoRA expert.
    let d = sub("convert");
    let target = d.join("out.expert");
    run_ok(&os(&[&"package", &LORA, &"-o", &target, &"--no-sidecar"]));
    out.push(Case {
        name: "convert",
        args: os(&[&"convert", &LEGACY, &"-o", &target]),
        old: std::fs::read(&target).unwrap(),
        target,
        keep: Vec::new(),
    });

    // sign in place: the old file is the unsigned expert.
    let d = sub("sign");
    let target = d.join("expert.expert");
    let key = d.join("key");
    run_ok(&os(&[&"keygen", &"-o", &key]));
    run_ok(&os(&[&"package", &DORA, &"-o", &target, &"--no-sidecar"]));
    out.push(Case {
        name: "sign",
        args: os(&[&"sign", &target, &"--key", &key]),
        old: std::fs::read(&target).unwrap(),
        keep: vec![key.clone(), d.join("key.pub")],
        target,
    });

    // osd compress: a LoRA expert compressed over the DoRA one.
    let d = sub("osd");
    let target = d.join("out.expert");
    let input = d.join("lora.expert");
    run_ok(&os(&[&"package", &LORA, &"-o", &input, &"--no-sidecar"]));
    run_ok(&os(&[&"package", &DORA, &"-o", &target, &"--no-sidecar"]));
    out.push(Case {
        name: "osd compress",
        args: os(&[
            &"osd",
            &"compress",
            &input,
            &"-o",
            &target,
            &"--rank",
            &"4",
            &"--sparsity",
            &"0.5",
        ]),
        old: std::fs::read(&target).unwrap(),
        keep: vec![input],
        target,
    });
    out
}

/// Starts the verb with the write-delay hook.
fn slowed(args: &[OsString]) -> std::process::Child {
    expertui(args)
        .env("EXPERTUI_TEST_WRITE_DELAY_US", WRITE_DELAY_US)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls until a temp file of `target` not in `before` appears (its time
/// since the call) or the child exits (None).
fn wait_for_new_temp(
    target: &Path,
    before: &[PathBuf],
    child: &mut std::process::Child,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if temps_of(target).iter().any(|t| !before.contains(t)) {
            return Some(start.elapsed());
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[derive(Default, Debug)]
struct Tally {
    runs: usize,
    old: usize,
    new: usize,
    mid_write: usize,
}

#[test]
fn killed_writers_leave_the_old_file_or_the_complete_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(SEED);
    let mut report = Vec::new();
    for case in cases(dir.path()) {
        let folder = case.target.parent().unwrap().to_path_buf();
        let mut expected: Vec<&Path> = vec![case.target.as_path()];
        expected.extend(case.keep.iter().map(PathBuf::as_path));

        // One full, slowed run: how long the verb takes, how long its temp
        // file lives, and that it really replaces the old file (so the
        // checks below can fail).
        let before = temps_of(&case.target);
        let start = Instant::now();
        let mut child = slowed(&case.args);
        let temp_seen = wait_for_new_temp(&case.target, &before, &mut child);
        let status = child.wait().unwrap();
        let full = start.elapsed();
        let window = temp_seen.map_or(full, |t| full.saturating_sub(t));
        assert!(
            status.success(),
            "{}: the uninterrupted run failed",
            case.name
        );
        assert_ne!(
            std::fs::read(&case.target).unwrap(),
            case.old,
            "{}",
            case.name
        );
        assert!(validates(&case.target), "{}", case.name);

        let mut tally = Tally::default();
        while tally.runs < MIN_ITER || (tally.mid_write < WANT_MID && tally.runs < MAX_ITER) {
            tally.runs += 1;
            std::fs::write(&case.target, &case.old).unwrap();
            // Odd runs: kill points spread over the whole run (and a little
            // past it). Even runs: wait for the temp file, then kill within
            // the time it lived in the uninterrupted run.
            let temps_before = temps_of(&case.target);
            let mut child = slowed(&case.args);
            let delay = if tally.runs % 2 == 1 {
                let span = u64::try_from(full.as_micros()).unwrap_or(u64::MAX);
                let d = Duration::from_micros(rng.below(span + span / 10));
                std::thread::sleep(d);
                d
            } else {
                let seen = wait_for_new_temp(&case.target, &temps_before, &mut child);
                let span = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
                let d = Duration::from_micros(rng.below(span));
                std::thread::sleep(d);
                seen.unwrap_or_default() + d
            };
            let _ = child.kill();
            let status = child.wait().unwrap();

            let now = std::fs::read(&case.target).unwrap();
            if now == case.old {
                tally.old += 1;
            } else {
                tally.new += 1;
                ExpertReader::open(&case.target)
                    .and_then(|r| r.verify_all())
                    .unwrap_or_else(|e| {
                        panic!(
                            "{}: kill after {delay:?} left a broken target: {e}",
                            case.name
                        )
                    });
                assert!(
                    validates(&case.target),
                    "{}: validate refused it",
                    case.name
                );
            }
            // A kill while the temp file was open leaves it behind (the
            // stale-temp sweep of a later write removes it).
            let killed = status.signal() == Some(libc::SIGKILL);
            if killed
                && temps_of(&case.target)
                    .iter()
                    .any(|t| !temps_before.contains(t))
            {
                tally.mid_write += 1;
            }
            assert_only_expected(&folder, &case.target, &expected);
        }
        assert!(
            tally.mid_write >= 1,
            "{}: no kill landed mid-write in {} runs",
            case.name,
            tally.runs
        );

        // The next complete write sweeps the temp files the killed ones left.
        std::fs::write(&case.target, &case.old).unwrap();
        run_ok(&case.args);
        assert!(
            temps_of(&case.target).is_empty(),
            "{}: temp files left after a complete write: {:?}",
            case.name,
            temps_of(&case.target)
        );
        assert!(validates(&case.target));
        report.push(format!("{}: {tally:?}", case.name));
    }
    eprintln!("{}", report.join("\n"));
}

/// Runs `args` with the file size limit set to `limit` bytes (SIGXFSZ
/// ignored, so a write past it fails with EFBIG instead of killing).
fn run_with_fsize_limit(args: &[OsString], limit: u64) -> (Option<i32>, String) {
    let mut cmd = expertui(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_full_disk_gives_a_clear_error_and_keeps_the_target() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases(dir.path()) {
        std::fs::write(&case.target, &case.old).unwrap();
        let (code, stderr) = run_with_fsize_limit(&case.args, 32 << 10);
        assert_eq!(code, Some(1), "{}: exit code (stderr: {stderr})", case.name);
        assert!(
            stderr.contains("disk full or file size limit reached while writing")
                && stderr.contains(&*case.target.to_string_lossy()),
            "{}: unclear message: {stderr}",
            case.name
        );
        assert_eq!(
            std::fs::read(&case.target).unwrap(),
            case.old,
            "{}: target changed",
            case.name
        );
        assert!(
            temps_of(&case.target).is_empty(),
            "{}: temp file left after the failed write",
            case.name
        );
    }
    // convert to tar.gz goes through the legacy writer.
    let target = dir.path().join("legacy.tar.gz.expert");
    std::fs::write(&target, b"old contents").unwrap();
    let (code, stderr) = run_with_fsize_limit(
        &os(&[&"convert", &LEGACY, &"-o", &target, &"--to", &"tar.gz"]),
        32 << 10,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("disk full or file size limit reached while writing"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"old contents");
    assert!(temps_of(&target).is_empty());
}

#[test]
fn disk_full_errors_are_typed_and_not_corruption() {
    for errno in [libc::ENOSPC, libc::EFBIG, libc::EDQUOT] {
        let e = FormatError::io("x.expert", std::io::Error::from_raw_os_error(errno));
        assert!(matches!(e, FormatError::DiskFull { .. }), "{errno}: {e:?}");
        assert!(!e.is_corruption());
        assert!(e
            .to_string()
            .starts_with("disk full or file size limit reached while writing x.expert: "));
    }
    let wrapped = std::io::Error::other(std::io::Error::from_raw_os_error(libc::ENOSPC));
    assert!(matches!(
        FormatError::io("x", wrapped),
        FormatError::DiskFull { .. }
    ));
    let other = FormatError::io("x", std::io::Error::from_raw_os_error(libc::EACCES));
    assert!(matches!(other, FormatError::Io { .. }));
}

// ---------------------------------------------------------------------------
// Files truncated or replaced while mapped
// ---------------------------------------------------------------------------

use expertui::format::{Codec, ExpertWriter, SectionSpec, SectionType, WriterOptions};

/// A file with a 512 KiB uncompressed section and a compressed one.
fn mapped_file(path: &Path, fill: u8) {
    let mut w = ExpertWriter::create(path, WriterOptions::default()).unwrap();
    let big: Vec<u8> = (0..512u32 << 10).map(|i| (i % 251) as u8 ^ fill).collect();
    w.add_section(SectionSpec::new(SectionType::Blob, "big"), &big)
        .unwrap();
    w.add_section(
        SectionSpec::new(SectionType::Blob, "packed").codec(Codec::Zstd),
        &vec![fill; 64 << 10],
    )
    .unwrap();
    w.finish().unwrap();
}

#[test]
fn truncation_after_open_is_a_typed_error_before_any_section_byte_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.expert");
    mapped_file(&path, 0);
    for cut in [0u64, 4096, 300 << 10] {
        let reader = ExpertReader::open(&path).unwrap();
        let len = reader.file_size();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let changed = |e: FormatError| match e {
            FormatError::FileChanged { mapped, now, .. } => {
                assert_eq!((mapped, now), (len, cut));
                assert!(!FormatError::FileChanged {
                    path: path.clone(),
                    mapped,
                    now
                }
                .is_corruption());
            }
            other => panic!("cut at {cut}: expected FileChanged, got {other}"),
        };
        changed(reader.verify_all().unwrap_err());
        changed(reader.section(0).unwrap_err());
        changed(reader.section(1).unwrap_err());
        changed(reader.check_section(1).unwrap_err());
        changed(reader.stored(0).unwrap_err());
        mapped_file(&path, 0);
    }
    // Grown in place (appended to) is a change too.
    let reader = ExpertReader::open(&path).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"tail").unwrap();
    assert!(matches!(
        reader.verify_all(),
        Err(FormatError::FileChanged { .. })
    ));
}

#[test]
fn a_file_replaced_by_rename_while_mapped_keeps_its_old_contents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.expert");
    mapped_file(&path, 0);
    let reader = ExpertReader::open(&path).unwrap();
    let old_root = reader.header().root_digest;
    let old_big = reader.section(0).unwrap().to_vec();
    // expertui's own writes replace by rename; so does this one.
    mapped_file(&path, 0x5a);
    reader.verify_all().unwrap();
    assert_eq!(&*reader.section(0).unwrap(), old_big.as_slice());
    assert_eq!(&*reader.section(1).unwrap(), vec![0u8; 64 << 10].as_slice());
    let fresh = ExpertReader::open(&path).unwrap();
    assert_ne!(fresh.header().root_digest, old_root);
    assert_eq!(
        &*fresh.section(1).unwrap(),
        vec![0x5au8; 64 << 10].as_slice()
    );
    // Through the binary too: validate the old map while convert replaces it.
    let target = dir.path().join("b.expert");
    run_ok(&os(&[&"package", &LORA, &"-o", &target, &"--no-sidecar"]));
    let before = ExpertReader::open(&target).unwrap();
    let before_bytes = before.bytes().to_vec();
    run_ok(&os(&[&"convert", &LEGACY, &"-o", &target]));
    before.verify_all().unwrap();
    assert_eq!(before.bytes(), before_bytes.as_slice());
    assert!(validates(&target));
}

const SIGBUS_CHILD: &str = "EXPERTUI_TEST_SIGBUS_CHILD";

/// Child of `a_read_past_a_truncation_exits_cleanly_instead_of_crashing`:
/// installs the binary's SIGBUS handler, maps the file, truncates it and
/// reads a byte that is no longer backed by the file.
#[test]
fn sigbus_child() {
    let Some(path) = std::env::var_os(SIGBUS_CHILD) else {
        return;
    };
    if std::env::var_os("EXPERTUI_TEST_SIGBUS_HANDLER").is_some() {
        expertui::sigbus::install_handler();
    }
    let reader = ExpertReader::open(&path).unwrap();
    let len = reader.bytes().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    // The typed check sees it...
    assert!(matches!(
        reader.check_unchanged(),
        Err(FormatError::FileChanged { .. })
    ));
    // ...but a caller that touches the bytes anyway faults.
    let last = reader.bytes().as_ptr().wrapping_add(len - 1);
    // SAFETY: within the mapping; the page is gone, which is the point.
    let byte = unsafe { std::ptr::read_volatile(last) };
    println!("read {byte} past the truncation: no fault");
    std::process::exit(0);
}

fn run_sigbus_child(handler: bool) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.expert");
    mapped_file(&path, 0);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "sigbus_child", "--nocapture", "--test-threads=1"])
        .env(SIGBUS_CHILD, &path);
    if handler {
        cmd.env("EXPERTUI_TEST_SIGBUS_HANDLER", "1");
    }
    cmd.output().unwrap()
}

#[test]
fn a_read_past_a_truncation_exits_cleanly_instead_of_crashing() {
    // Without the handler the read really faults (so the test can fail)...
    let raw = run_sigbus_child(false);
    assert_eq!(
        raw.status.signal(),
        Some(libc::SIGBUS),
        "expected a bus error without the handler: {raw:?}"
    );
    // ...with it, the process exits with code 1 and the fixed message.
    let out = run_sigbus_child(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "died by a signal: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(expertui::sigbus::EXIT_CODE),
        "{stderr}"
    );
    assert!(
        stderr.contains("truncated or became unreadable while it was being read (SIGBUS)"),
        "{stderr}"
    );
}
