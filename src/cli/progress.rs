//! Progress bars on stderr, hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar; invisible when stderr is not a terminal or in JSON mode.
pub fn bytes_bar(label: &str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(label.to_string());
    bar
}

/// A counting bar for batches of files.
pub fn count_bar(label: &str, total: u64, quiet: bool) -> ProgressBar {
    let bar = bytes_bar(label, quiet);
    bar.set_length(total);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}
