//! The terminal UI (ratatui + crossterm). It renders and routes only: files
//! are parsed, hashed and decoded by `format`, on background threads.
//!
//! Panels: overview, TOC + hex browser, section decoder, integrity, OSD,
//! benchmark, one file each under `panels/`. A new panel is one file there,
//! plus its `mod` line and its registry line in `panels/mod.rs`.
//!
//! Who uses whom (no circles): `render` draws the `App` (`state`), which
//! routes to `panels`; a panel implements `panel::Panel` and sees the app
//! only through a `context::Context`. The rest are leaves that use nothing
//! above them: `keys`, `theme`, `cursor`, `checks`, `jobs`, `prompt`
//! (uses `cursor`), `widgets` (uses `checks`, `theme`). `help` makes the
//! help overlay and the hints from the registry.

pub mod checks;
pub mod context;
pub mod cursor;
pub mod help;
pub mod jobs;
pub mod keys;
pub mod panel;
pub mod panels;
pub mod prompt;
pub mod render;
pub mod state;
pub mod theme;
pub mod widgets;

/// The bench panel under its old path (`app::benchpanel::BenchView`).
pub use panels::bench as benchpanel;

use std::io::{self, stdout};
use std::time::Duration;

use crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind};
use ratatui::DefaultTerminal;

pub use state::App;

use crate::format::inspect::Inspected;

/// Runs the TUI on `doc` until the user quits, checking its signature
/// against `policy` when one is given. The terminal is restored on exit, on
/// error and on panic.
/// `remote`: the URL of a remote expert `doc` holds only part of (its
/// header, TOC and text sections); the rest is fetched in the background.
pub fn run(
    doc: Inspected,
    policy: Option<crate::format::signing::Policy>,
    remote: Option<url::Url>,
) -> io::Result<()> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = crossterm::execute!(stdout(), DisableMouseCapture);
        previous(info);
    }));
    // ratatui::init enters raw mode and the alternate screen, and chains a
    // panic hook that leaves them before ours runs.
    // A SIGBUS (a mapped file truncated under us) exits from a signal
    // handler: it restores the terminal itself while this flag is set.
    crate::sigbus::restores_terminal(true);
    let mut terminal = ratatui::init();
    let result = crossterm::execute!(stdout(), EnableMouseCapture).and_then(|_| {
        let mut app = App::with_policy(doc, policy);
        if let Some(url) = remote {
            app.fetch_remote(url);
        }
        event_loop(&mut terminal, app)
    });
    let _ = crossterm::execute!(stdout(), DisableMouseCapture);
    ratatui::restore();
    crate::sigbus::restores_terminal(false);
    result
}

fn event_loop(terminal: &mut DefaultTerminal, mut app: App) -> io::Result<()> {
    let mut dirty = true;
    while !app.quit {
        if dirty {
            terminal.draw(|frame| render::draw(frame, &mut app))?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => app.on_key(key),
                // The body starts below the one-line tab bar.
                Event::Mouse(mouse) => app.on_mouse(mouse, 1),
                _ => {}
            }
            dirty = true;
        }
        dirty |= app.poll_background();
    }
    Ok(())
}
