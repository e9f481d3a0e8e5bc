//! The terminal is put back when the UI is killed: SIGTERM, SIGHUP and
//! SIGINT restore the main screen, mouse reporting and the line settings
//! (as a panic does), through a real pseudo-terminal.

#![cfg(target_os = "linux")]

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Opens a pty of 80×24: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty fills the two descriptors; the pointers are valid.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: fresh descriptors this test owns.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    use std::os::fd::AsRawFd;
    // SAFETY: tcgetattr writes into a termios we own.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

fn wait_for(output: &Arc<Mutex<Vec<u8>>>, needle: &[u8], timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if output
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn killing_the_ui_restores_the_terminal() {
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        let (master, slave) = pty();
        let cooked = lflag(&slave);
        assert_ne!(cooked & libc::ICANON, 0, "a fresh pty is cooked");
        let mut child = Command::new(env!("CARGO_BIN_EXE_expertui"))
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()))
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let output = output.clone();
            let mut master = std::fs::File::from(master);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        assert!(
            wait_for(&output, b"\x1b[?1049h", Duration::from_secs(30)),
            "the UI did not start: {:?}",
            String::from_utf8_lossy(&output.lock().unwrap())
        );
        // Let it draw and turn mouse reporting on.
        wait_for(&output, b"Overview", Duration::from_secs(10));
        assert_eq!(lflag(&slave) & libc::ICANON, 0, "raw while the UI runs");
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal), "dies of the signal it got");
        assert!(
            wait_for(&output, b"\x1b[?1049l", Duration::from_secs(5)),
            "signal {signal}: main screen not restored"
        );
        let text = output.lock().unwrap().clone();
        let last_on = text.windows(8).rposition(|w| w == b"\x1b[?1000h");
        let last_off = text.windows(8).rposition(|w| w == b"\x1b[?1000l");
        assert!(
            last_off > last_on,
            "signal {signal}: mouse reporting left on"
        );
        assert_eq!(
            lflag(&slave) & libc::ICANON,
            cooked & libc::ICANON,
            "line settings back"
        );
        assert_eq!(lflag(&slave) & libc::ECHO, cooked & libc::ECHO);
        drop(slave);
        let _ = reader.join();
    }
}

/// `extract -o -` sends text to a terminal but refuses binary bytes there
/// (escape sequences in a section could drive it), as curl does.
#[test]
fn extract_to_a_terminal_refuses_binary_bytes() {
    let run = |section: &str| {
        let (master, slave) = pty();
        let status = Command::new(env!("CARGO_BIN_EXE_expertui"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "--headless",
                "extract",
                "assets/demo.expert",
                section,
                "-o",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        drop(slave);
        drop(master);
        (
            status.status.code(),
            String::from_utf8_lossy(&status.stderr).into_owned(),
        )
    };
    let (code, err) = run("grammar.gbnf");
    assert_eq!(code, Some(0), "text goes to the terminal: {err}");
    let (code, err) = run("layer.0");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("redirect stdout"), "{err}");
}
