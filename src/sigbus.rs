//! Signals, a process-wide concern. SIGBUS is the one crash a memory-mapped
//! reader cannot prevent with checks: another program truncates a file
//! while it is mapped (`format::reader` detects shrinking files before
//! touching section bytes; this catches the race that remains). SIGTERM,
//! SIGHUP and SIGINT end the process as usual, but while the terminal UI
//! owns the terminal they first put it back (as on a panic): `kill` never
//! leaves a shell on the alternate screen with mouse reporting on. The
//! binary installs the SIGBUS handler; the terminal UI tells this module
//! when the terminal must be restored.

/// Message of the SIGBUS handler (one `write(2)`, no formatting).
const SIGBUS_MESSAGE: &[u8] = b"error: a memory-mapped input file was truncated or became unreadable while it was being read (SIGBUS); stopped. Outputs are only ever replaced whole, so no partial file was left.\n";

/// Exit code after a SIGBUS: 1, an I/O error (the file changed under us).
pub const EXIT_CODE: i32 = 1;

/// Set while the terminal UI owns the terminal: the handler then puts the
/// terminal back (mouse off, main screen, cursor shown, the saved line
/// settings) before it prints, so a SIGBUS never strands a raw terminal.
#[cfg(unix)]
static TUI_TERMINAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The terminal's line settings before the UI went raw.
#[cfg(unix)]
static SAVED_TERMIOS: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();

/// Escape sequences that undo what the UI turns on (mouse capture modes,
/// alternate screen, hidden cursor).
#[cfg(unix)]
const TERMINAL_RESET: &[u8] =
    b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?1049l\x1b[?25h";

/// Tells the SIGBUS handler that the terminal UI is (or no longer is) in
/// raw mode on the alternate screen. Call with `true` before entering raw
/// mode (the current line settings are saved then) and `false` after
/// restoring the terminal.
pub fn restores_terminal(active: bool) {
    #[cfg(unix)]
    {
        if active {
            // SAFETY: tcgetattr writes a termios we own; failure leaves it unset.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } == 0 {
                let _ = SAVED_TERMIOS.set(t);
            }
        }
        TUI_TERMINAL.store(active, std::sync::atomic::Ordering::SeqCst);
        let handler = if active {
            on_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t
        } else {
            libc::SIG_DFL
        };
        for signal in TERMINATING {
            // SAFETY: installs either the default action or a handler that
            // only calls async-signal-safe functions; `sa` is fully set.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(signal, &sa, std::ptr::null_mut());
            }
        }
    }
    #[cfg(not(unix))]
    let _ = active;
}

/// Signals that end the process and must not strand the terminal.
#[cfg(unix)]
const TERMINATING: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT];

/// Puts the terminal back (mouse off, main screen, cursor, line settings).
/// Async-signal-safe.
#[cfg(unix)]
fn reset_terminal() {
    // SAFETY: write(2) and tcsetattr(3) are async-signal-safe; the buffer is
    // static and the saved termios is only read.
    unsafe {
        if TUI_TERMINAL.load(std::sync::atomic::Ordering::SeqCst) {
            libc::write(
                libc::STDOUT_FILENO,
                TERMINAL_RESET.as_ptr().cast(),
                TERMINAL_RESET.len(),
            );
            if let Some(t) = SAVED_TERMIOS.get() {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t);
            }
        }
    }
}

/// SIGTERM, SIGHUP, SIGINT while the UI runs: restore the terminal, then
/// die of the same signal (its default action), so the exit status tells
/// the parent what happened.
#[cfg(unix)]
extern "C" fn on_terminate(signal: libc::c_int) {
    reset_terminal();
    // SAFETY: signal(2) and raise(3) are async-signal-safe.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[cfg(unix)]
extern "C" fn on_sigbus(_signal: libc::c_int) {
    reset_terminal();
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is static.
    unsafe {
        libc::write(
            libc::STDERR_FILENO,
            SIGBUS_MESSAGE.as_ptr().cast(),
            SIGBUS_MESSAGE.len(),
        );
        libc::_exit(EXIT_CODE);
    }
}

/// Turns a SIGBUS (a read of a mapped page that no longer exists because
/// another program truncated the file, or an I/O error under the map) into
/// a fixed message on stderr and exit code [`EXIT_CODE`] instead of a
/// "Bus error" crash. For binaries: call once at start-up. A no-op off Unix.
pub fn install_handler() {
    #[cfg(unix)]
    // SAFETY: installs a handler that only calls async-signal-safe
    // functions; `sa` is fully initialised (zeroed, then set).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}
