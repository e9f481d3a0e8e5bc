//! `expertui`: open an expert in the terminal UI, or run a headless verb.

use std::process::ExitCode;

fn main() -> ExitCode {
    expertui::cli::run()
}
