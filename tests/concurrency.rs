//! Readers against a writer: reader threads (in this process) and reader
//! processes (`validate --verify-integrity`) open, verify and read one
//! `.expert` file over and over while `convert` processes replace it and
//! write new files beside it. Every open must see a complete, valid file,
//! the old one or a new one, never a partial one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use expertui::format::ExpertReader;

const LEGACY: &str = "tests/fixtures/minilm-sql-dora.v0.3.0.expert";
const LORA: &str = "tests/fixtures/minilm-lora-r8";
const IA3: &str = "tests/fixtures/minilm-ia3";

/// Conversions into the shared target (and as many into new names).
const WRITES: usize = 12;
const READER_THREADS: usize = 3;
const READER_PROCESSES: usize = 2;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn expertui() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("expertui"));
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .arg("--headless")
        .stdout(Stdio::null());
    cmd
}

fn run_ok(args: &[&Path]) {
    let out = expertui()
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// Opens, checks every digest and decodes every section: the root digest
/// of what it saw.
fn read_fully(path: &Path) -> Result<[u8; 32], String> {
    let reader = ExpertReader::open(path).map_err(|e| format!("open: {e}"))?;
    reader.verify_all().map_err(|e| format!("verify: {e}"))?;
    for i in 0..reader.sections().len() {
        reader.section(i).map_err(|e| format!("section {i}: {e}"))?;
    }
    Ok(reader.header().root_digest)
}

#[test]
fn readers_see_the_old_or_the_new_file_never_a_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two inputs that convert to different files, and their outputs.
    let ia3 = d.join("ia3.expert");
    run_ok(&[p("package"), p(IA3), p("-o"), &ia3, p("--no-sidecar")]);
    let refs = d.join("refs");
    std::fs::create_dir(&refs).unwrap();
    let (ref_a, ref_b) = (refs.join("a.expert"), refs.join("b.expert"));
    run_ok(&[p("convert"), p(LEGACY), p("-o"), &ref_a]);
    run_ok(&[p("convert"), &ia3, p("-o"), &ref_b]);
    // The shared file starts as a third expert.
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    let shared = work.join("shared.expert");
    run_ok(&[p("package"), p(LORA), p("-o"), &shared, p("--no-sidecar")]);
    let allowed: Vec<[u8; 32]> = [&shared, &ref_a, &ref_b]
        .iter()
        .map(|f| read_fully(f).unwrap())
        .collect();
    assert_eq!(
        allowed.len(),
        3,
        "three different files, so a mix-up would show"
    );
    assert!(allowed[0] != allowed[1] && allowed[1] != allowed[2] && allowed[0] != allowed[2]);

    let done = Arc::new(AtomicBool::new(false));
    let opens = Arc::new(AtomicUsize::new(0));
    let seen_new = Arc::new(AtomicUsize::new(0));
    let validations = Arc::new(AtomicUsize::new(0));
    let side_files = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..READER_THREADS {
        let (done, opens, seen_new, side_files) = (
            done.clone(),
            opens.clone(),
            seen_new.clone(),
            side_files.clone(),
        );
        let (shared, work, allowed) = (shared.clone(), work.clone(), allowed.clone());
        readers.push(std::thread::spawn(move || -> Result<(), String> {
            loop {
                let last = done.load(Ordering::SeqCst);
                let root = read_fully(&shared)?;
                if !allowed.contains(&root) {
                    return Err(format!("unexpected root {}", hex::encode(root)));
                }
                if root != allowed[0] {
                    seen_new.fetch_add(1, Ordering::SeqCst);
                }
                opens.fetch_add(1, Ordering::SeqCst);
                // Files appearing beside it are complete too (temp files
                // are hidden: `.<name>.<random>.tmp`).
                for entry in std::fs::read_dir(&work)
                    .map_err(|e| e.to_string())?
                    .flatten()
                {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') || name == "shared.expert" {
                        continue;
                    }
                    match read_fully(&entry.path()) {
                        Ok(root) if allowed.contains(&root) => {
                            side_files.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(root) => return Err(format!("{name}: root {}", hex::encode(root))),
                        Err(e) => return Err(format!("{name}: {e}")),
                    }
                }
                if last {
                    return Ok(());
                }
            }
        }));
    }
    for _ in 0..READER_PROCESSES {
        let (done, validations, shared) = (done.clone(), validations.clone(), shared.clone());
        readers.push(std::thread::spawn(move || -> Result<(), String> {
            loop {
                let last = done.load(Ordering::SeqCst);
                let out = expertui()
                    .args([
                        Path::new("validate"),
                        Path::new("--verify-integrity"),
                        &shared,
                    ])
                    .stderr(Stdio::piped())
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "validate: {:?}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                validations.fetch_add(1, Ordering::SeqCst);
                if last {
                    return Ok(());
                }
            }
        }));
    }

    // The writer: conversions into the shared name and into new names.
    for i in 0..WRITES {
        let input = if i % 2 == 0 { Path::new(LEGACY) } else { &ia3 };
        run_ok(&[p("convert"), input, p("-o"), &shared]);
        let side = work.join(format!("side-{i}.expert"));
        run_ok(&[p("convert"), input, p("-o"), &side]);
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap().unwrap();
    }
    let (opens, seen_new, validations, side_files) = (
        opens.load(Ordering::SeqCst),
        seen_new.load(Ordering::SeqCst),
        validations.load(Ordering::SeqCst),
        side_files.load(Ordering::SeqCst),
    );
    eprintln!(
        "{WRITES} writes to the shared name and {WRITES} beside it; {opens} full reads in \
         {READER_THREADS} threads ({seen_new} of a replaced file), {side_files} reads of new \
         files beside it, {validations} validate processes"
    );
    // Every reader ran at least once after the last write.
    assert!(opens >= READER_THREADS && validations >= READER_PROCESSES);
    // After the writes the shared file is the last conversion's output.
    assert_eq!(read_fully(&shared).unwrap(), allowed[2]);
    // No temp file is left once every writer has finished.
    let leftovers: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
