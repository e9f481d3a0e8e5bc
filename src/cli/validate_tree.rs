//! `validate --recursive DIR`: every `.expert` below a folder, validated on
//! a bounded pool, one line per file (a JSON object per line with `--json`)
//! and a summary; the exit code is the worst of the files'.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;

use super::{Failure, EXIT_ERROR, EXIT_INVALID};
use crate::diagnostics::printable;
use crate::validation::{validate_path, ValidateOptions};

/// Folders deeper than this are not entered (a registry is a few levels
/// deep; a deeper tree is more likely a mistake or a trap).
const MAX_DEPTH: usize = 32;

/// A folder that could not be read, and why.
pub type Unreadable = (PathBuf, String);

/// Every regular file named `*.expert` below `root`, sorted, and the
/// folders below it that could not be read (each becomes an unreadable
/// line; only `root` itself failing stops the run). Symbolic links are not
/// followed, so a link cannot loop the walk or lead outside it.
pub fn expert_files(root: &Path) -> Result<(Vec<PathBuf>, Vec<Unreadable>), Failure> {
    if let Some(url) = crate::format::remote::url_of(root) {
        let listed = crate::format::remote::list_experts(&url)?;
        return Ok((listed.into_iter().map(PathBuf::from).collect(), Vec::new()));
    }
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if depth == 0 => {
                return Err(Failure::error(format!(
                    "{}: {e}",
                    printable(&dir.display().to_string())
                )))
            }
            Err(e) => {
                unreadable.push((dir, e.to_string()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && depth < MAX_DEPTH {
                stack.push((path, depth + 1));
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "expert") {
                out.push(path);
            }
        }
    }
    out.sort();
    unreadable.sort();
    Ok((out, unreadable))
}

/// One file's outcome.
struct Outcome {
    line: serde_json::Value,
    code: u8,
}

fn check(path: &Path, options: &ValidateOptions<'_>) -> Outcome {
    let file = path.display().to_string();
    match validate_path(path, options) {
        Ok(report) => Outcome {
            code: if report.valid { 0 } else { EXIT_INVALID },
            line: json!({
                "file": file,
                "format": report.format,
                "valid": report.valid,
                "errors": report.counts.errors,
                "warnings": report.counts.warnings,
                "problems": report.problems,
            }),
        },
        Err(e) => Outcome {
            code: EXIT_ERROR,
            line: json!({ "file": file, "valid": false, "error": e.to_string() }),
        },
    }
}

/// Validates every expert below `root` with at most `jobs` at once.
pub fn run(
    root: &Path,
    options: &ValidateOptions<'_>,
    jobs: usize,
    json_out: bool,
) -> Result<(), Failure> {
    let (files, unreadable_dirs) = expert_files(root)?;
    let started = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .map_err(|e| Failure::error(format!("thread pool: {e}")))?;
    let mut outcomes: Vec<Outcome> =
        pool.install(|| files.par_iter().map(|p| check(p, options)).collect());
    outcomes.extend(unreadable_dirs.into_iter().map(|(dir, e)| Outcome {
        code: EXIT_ERROR,
        line: json!({ "file": dir.display().to_string(), "valid": false, "error": e }),
    }));
    let seconds = started.elapsed().as_secs_f64();
    let (mut valid, mut invalid, mut unreadable) = (0usize, 0usize, 0usize);
    for o in &outcomes {
        match o.code {
            0 => valid += 1,
            EXIT_INVALID => invalid += 1,
            _ => unreadable += 1,
        }
        if json_out {
            println!("{}", o.line);
        } else {
            let file = printable(o.line["file"].as_str().unwrap_or("?"));
            let verdict = match (o.code, o.line["error"].as_str()) {
                (0, _) => format!("valid ({} warnings)", o.line["warnings"]),
                (_, Some(e)) => format!("ERROR {}", printable(e)),
                _ => format!(
                    "INVALID ({} errors): {}",
                    o.line["errors"],
                    printable(o.line["problems"][0].as_str().unwrap_or(""))
                ),
            };
            println!("{file}: {verdict}");
        }
    }
    let rate = outcomes.len() as f64 / seconds.max(1e-9);
    let summary = json!({
        "summary": {
            "root": root.display().to_string(),
            "files": outcomes.len(),
            "valid": valid,
            "invalid": invalid,
            "unreadable": unreadable,
            "seconds": seconds,
            "experts_per_second": rate,
            "jobs": jobs,
        }
    });
    if json_out {
        println!("{summary}");
    } else {
        eprintln!(
            "{} experts: {valid} valid, {invalid} invalid, {unreadable} unreadable in {seconds:.2} s ({rate:.0} experts/s, {jobs} at once)",
            outcomes.len()
        );
    }
    // The worst outcome decides: an invalid expert, then one that could not
    // be read.
    let worst = if invalid > 0 {
        EXIT_INVALID
    } else if unreadable > 0 {
        EXIT_ERROR
    } else {
        0
    };
    match worst {
        0 => Ok(()),
        code => Err(Failure {
            code,
            message: format!(
                "{} of {} experts below {} are not valid",
                invalid + unreadable,
                outcomes.len(),
                root.display()
            ),
            reported: json_out,
        }),
    }
}
