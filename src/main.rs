//! `expertui`: open an expert in the terminal UI, or run a headless verb.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like other Unix filters, end quietly when the reader of stdout goes
    // away (`expertui info FILE | head`) instead of panicking on EPIPE.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any
    // thread starts has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A mapped input truncated by another program faults on read (SIGBUS):
    // exit with a message and code 1 instead of a raw "Bus error" crash.
    expertui::sigbus::install_handler();
    expertui::cli::run()
}
