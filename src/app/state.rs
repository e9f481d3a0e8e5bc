//! The app: the open file, the state the panels share, and the panels. It
//! routes keys, mouse and background results to the panel on screen; what
//! each panel does is in `panels/`, and panels see the app only through a
//! `Context`.

use std::ops::{Deref, DerefMut};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;
use ratatui::Frame;

use crate::diagnostics::Finding;
use crate::format::inspect::{region_at, Inspected, Opened, Region, SectionRow};
use crate::format::signing::Policy;

use super::checks::findings_of;
use super::context::Context;
use super::jobs::{Envelope, Jobs};
use super::keys::{global_command, Command, Nav};
use super::panel::AnyPanel;
use super::panels::Panels;
use super::prompt::Edit;
use super::theme::Theme;
use super::widgets::LIST_WIDTH;

// The types of `App`'s fields, under the path they had when they were
// defined here (tests name `app::state::PanelId`).
pub use super::checks::{TrustView, Verification};
pub use super::cursor::HexState;
pub use super::panels::PanelId;
pub use super::prompt::{Prompt, PromptKind};

/// Everything the TUI shows.
pub struct App {
    pub doc: Arc<Inspected>,
    pub regions: Vec<Region>,
    pub rows: Vec<SectionRow>,
    /// The panel on screen.
    pub panel: PanelId,
    /// Selected section, shared by the TOC, decoder and integrity panels.
    pub selected: usize,
    /// First row shown in the section list (set by the renderer, for mouse clicks).
    pub list_first: usize,
    pub hex: HexState,
    pub verification: Verification,
    /// What `validate` says of the file (structure, manifest, grammar,
    /// consistency; sections are hashed by the Integrity panel).
    pub findings: Vec<Finding>,
    /// The signature against the trust policy the TUI was started with
    /// (`None`: no policy given, nothing checked beyond the embedded key).
    pub trust: Option<TrustView>,
    pub prompt: Option<Prompt>,
    pub show_help: bool,
    /// Lines the help overlay is scrolled down.
    pub help_scroll: u16,
    /// Width of the last frame drawn (for clicks on the tab bar).
    pub frame_width: u16,
    pub message: String,
    pub quit: bool,
    pub colors: bool,
    /// Every panel's own state; `app.osd`, `app.bench`… reach it directly.
    pub panels: Panels,
    /// A remote expert being fetched: bytes done and total.
    pub fetching: Option<(u64, u64)>,
    /// The trust policy the TUI started with (findings are made again
    /// when a remote expert's bytes arrive).
    policy: Option<Policy>,
    tx: Sender<Envelope>,
    rx: Receiver<Envelope>,
}

/// Each panel reads as a field of the app (`app.bench.report`).
impl Deref for App {
    type Target = Panels;

    fn deref(&self) -> &Panels {
        &self.panels
    }
}

impl DerefMut for App {
    fn deref_mut(&mut self) -> &mut Panels {
        &mut self.panels
    }
}

impl App {
    pub fn new(doc: Inspected) -> Self {
        Self::with_policy(doc, None)
    }

    /// The TUI on `doc`, its signature checked against `policy`.
    pub fn with_policy(doc: Inspected, policy: Option<Policy>) -> Self {
        let doc = Arc::new(doc);
        let (tx, rx) = channel();
        // A remote expert opened on its header, TOC and text sections is
        // judged once every byte has arrived (see `fetch_remote`).
        let complete = doc.sections_present();
        let mut app = Self {
            regions: doc.regions(),
            rows: doc.rows(),
            findings: if complete {
                findings_of(&doc, policy.as_ref())
            } else {
                Vec::new()
            },
            trust: policy
                .as_ref()
                .filter(|_| complete)
                .map(|p| TrustView::of(&doc, p)),
            doc,
            panel: PanelId::Overview,
            selected: 0,
            list_first: 0,
            hex: HexState::default(),
            verification: Verification::NotApplicable,
            prompt: None,
            show_help: false,
            help_scroll: 0,
            frame_width: 80,
            message: String::new(),
            quit: false,
            colors: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            panels: Panels::default(),
            fetching: None,
            policy,
            tx,
            rx,
        };
        let doc = app.doc.clone();
        match &doc.opened {
            Opened::Binary(_) if !complete => {
                app.message = "fetching the rest of the file...".into();
            }
            Opened::Binary(_) => app.start_verification(),
            Opened::Broken(e) => {
                // Open straight onto the bytes where parsing stopped.
                app.panel = PanelId::Hex;
                app.goto(e.offset().unwrap_or(0));
                app.message = format!("cannot parse: {e}");
            }
            Opened::Legacy(_) => {
                app.message =
                    "legacy tar.gz package (deprecated): member files listed as sections".into()
            }
        }
        app
    }

    /// Calls `f` with panel `id` and its view of the app.
    fn with_panel<R>(
        &mut self,
        id: PanelId,
        f: impl FnOnce(&mut dyn AnyPanel, &mut Context) -> R,
    ) -> R {
        let App {
            doc,
            regions,
            rows,
            selected,
            list_first,
            hex,
            verification,
            findings,
            trust,
            prompt,
            message,
            colors,
            panels,
            tx,
            ..
        } = self;
        let mut ctx = Context {
            doc,
            regions,
            rows,
            selected: *selected,
            list_first,
            verification,
            findings,
            trust: trust.as_ref(),
            hex,
            prompt,
            message,
            theme: Theme { colors: *colors },
            jobs: Jobs::new(tx.clone(), id.index()),
        };
        f(panels.get_mut(id), &mut ctx)
    }

    /// Draws the panel on screen into `area`.
    pub(super) fn draw_panel(&mut self, frame: &mut Frame, area: Rect) {
        self.with_panel(self.panel, |panel, ctx| panel.draw(frame, area, ctx));
    }

    /// Hashes every section on a worker thread (as the Integrity panel's
    /// `v` does, through any panel's context).
    pub fn start_verification(&mut self) {
        self.with_panel(self.panel, |_, ctx| ctx.start_verification());
    }

    /// Fetches the rest of the remote expert at `url` in the background;
    /// the status line shows the progress, and the file is checked and
    /// shown in full when it has arrived.
    pub fn fetch_remote(&mut self, url: url::Url) {
        self.fetching = Some((0, 0));
        Jobs::new(self.tx.clone(), 0).fetch_remote(url);
    }

    /// The fetched remote expert replaces the partial one.
    fn fetched(&mut self, doc: crate::format::inspect::Inspected) {
        let doc = Arc::new(doc);
        self.regions = doc.regions();
        self.rows = doc.rows();
        self.findings = findings_of(&doc, self.policy.as_ref());
        self.trust = self.policy.as_ref().map(|p| TrustView::of(&doc, p));
        self.doc = doc;
        self.fetching = None;
        if matches!(self.doc.opened, Opened::Binary(_)) {
            self.start_verification();
        }
    }

    /// Applies finished background work; returns whether anything changed.
    pub fn poll_background(&mut self) -> bool {
        let mut changed = false;
        while let Ok(envelope) = self.rx.try_recv() {
            self.apply(envelope);
            changed = true;
        }
        changed
    }

    /// Blocks until background work is done (tests and scripted runs).
    pub fn wait_background(&mut self) {
        while self.busy() {
            match self.rx.recv() {
                Ok(envelope) => self.apply(envelope),
                Err(_) => break,
            }
        }
    }

    fn busy(&self) -> bool {
        matches!(self.verification, Verification::Running)
            || self.fetching.is_some()
            || PanelId::ALL.iter().any(|&id| self.panels.get(id).busy())
    }

    fn apply(&mut self, envelope: Envelope) {
        match envelope {
            Envelope::Verified { checks, tail_clean } => {
                let damaged = checks.iter().filter(|c| !c.ok()).count();
                self.message = if damaged == 0 && tail_clean {
                    format!("verified: all {} sections intact", checks.len())
                } else {
                    format!("verification: {damaged} damaged section(s)")
                };
                self.verification = Verification::Done { checks, tail_clean };
            }
            Envelope::Fetching { done, total } => {
                self.fetching = Some((done, total));
                self.message = format!(
                    "fetching {:.0} % ({:.1} of {:.1} MB)",
                    if total == 0 {
                        0.0
                    } else {
                        done as f64 * 100.0 / total as f64
                    },
                    done as f64 / 1e6,
                    total as f64 / 1e6
                );
            }
            Envelope::Fetched(Ok(doc)) => self.fetched(*doc),
            Envelope::Fetched(Err(e)) => {
                self.fetching = None;
                self.message = format!("fetch failed: {e}");
            }
            Envelope::ForPanel { slot, message } => {
                if let Some(id) = PanelId::at(slot) {
                    self.with_panel(id, |panel, ctx| panel.on_message(message, ctx));
                }
            }
        }
    }

    pub fn region_at_cursor(&self) -> Option<&Region> {
        region_at(&self.regions, self.hex.cursor)
    }

    /// Moves the hex cursor, keeping it inside the file and on screen.
    pub fn goto(&mut self, offset: u64) {
        self.hex.goto(offset, self.doc.len());
    }

    /// Picks section `index` (clamped to the list) and tells every panel.
    pub fn select(&mut self, index: usize) {
        let Some(last) = self.rows.len().checked_sub(1) else {
            return;
        };
        self.selected = index.min(last);
        let shown = self.panel;
        for &id in PanelId::ALL {
            self.with_panel(id, |panel, ctx| panel.on_select(id == shown, ctx));
        }
    }

    /// `[` / `]`: on the hex view, from where the cursor is (the section
    /// after it, or the one starting before it); elsewhere, from the
    /// selection.
    fn step_section(&mut self, forward: bool) {
        if self.panel != PanelId::Hex {
            let next = if forward {
                self.selected.saturating_add(1)
            } else {
                self.selected.saturating_sub(1)
            };
            self.select(next);
            return;
        }
        let cursor = self.hex.cursor;
        let starts = self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.offset.map(|o| (i, o)));
        let target = if forward {
            starts.filter(|&(_, o)| o > cursor).min_by_key(|&(_, o)| o)
        } else {
            starts.filter(|&(_, o)| o < cursor).max_by_key(|&(_, o)| o)
        };
        if let Some((index, _)) = target {
            self.select(index);
        }
    }

    /// The list selection follows the hex cursor: the section it is in.
    fn follow_cursor(&mut self) {
        if self.panel != PanelId::Hex {
            return;
        }
        let cursor = self.hex.cursor;
        let inside = self.rows.iter().position(|r| {
            r.offset
                .is_some_and(|o| cursor >= o && cursor < o.saturating_add(r.stored_len.max(1)))
        });
        if let Some(index) = inside {
            self.selected = index;
        }
    }

    /// Puts panel `id` on screen.
    fn show(&mut self, id: PanelId) {
        self.panel = id;
        self.with_panel(id, |panel, ctx| panel.on_enter(ctx));
    }

    /// Handles one key press: the prompt or the help take it first, then
    /// the panel on screen, then the global bindings.
    pub fn on_key(&mut self, key: KeyEvent) {
        self.route_key(key);
        self.follow_cursor();
    }

    fn route_key(&mut self, key: KeyEvent) {
        if let Some(prompt) = self.prompt.as_mut() {
            match prompt.edit(key) {
                Edit::Typing => {}
                Edit::Cancel => self.prompt = None,
                Edit::Submit => {
                    if let Some(prompt) = self.prompt.take() {
                        self.message = prompt.submit(&mut self.hex, &self.doc.bytes);
                    }
                }
            }
            return;
        }
        if self.show_help {
            match key.code {
                KeyCode::Down | KeyCode::Char('j') => {
                    self.help_scroll = self.help_scroll.saturating_add(1)
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    self.help_scroll = self.help_scroll.saturating_sub(1)
                }
                KeyCode::PageDown => self.help_scroll = self.help_scroll.saturating_add(10),
                KeyCode::PageUp => self.help_scroll = self.help_scroll.saturating_sub(10),
                _ => self.show_help = false,
            }
            return;
        }
        // A panel may give Esc a meaning (cancel its job, go back); it
        // never quits: only `q` and Ctrl-C do (gitui, k9s).
        if self.with_panel(self.panel, |panel, ctx| panel.on_key(&key, ctx)) {
            return;
        }
        if key.code == KeyCode::Esc {
            self.message = "q quits".into();
            return;
        }
        if let Some(command) = global_command(&key) {
            self.run(command);
        }
    }

    /// Runs a global command.
    pub fn run(&mut self, command: Command) {
        let count = PanelId::ALL.len();
        let here = self.panel.index();
        match command {
            Command::Quit => self.quit = true,
            Command::Help => {
                self.show_help = true;
                self.help_scroll = 0;
            }
            Command::NextPanel => self.show_at((here + 1) % count),
            Command::PrevPanel => self.show_at((here + count - 1) % count),
            Command::Show(index) => self.show_at(index),
            Command::Nav(nav) => self.nav(nav),
            Command::PrevSection => self.step_section(false),
            Command::NextSection => self.step_section(true),
        }
    }

    fn show_at(&mut self, index: usize) {
        if let Some(id) = PanelId::at(index) {
            self.show(id);
        }
    }

    /// A movement key: the panel's meaning first, else ↑↓ pick sections.
    fn nav(&mut self, nav: Nav) {
        if self.with_panel(self.panel, |panel, ctx| panel.on_nav(nav, ctx)) {
            return;
        }
        match nav {
            Nav::Up => self.select(self.selected.saturating_sub(1)),
            Nav::Down => self.select(self.selected.saturating_add(1)),
            Nav::PageUp | Nav::PageDown => {}
        }
    }

    /// Mouse: the panel on screen may take a click; otherwise the wheel
    /// moves and a click on a list row picks that section. `list_top` is
    /// the first screen row of the panel area.
    pub fn on_mouse(&mut self, event: MouseEvent, list_top: u16) {
        // A click on the tab bar shows that panel.
        if let (MouseEventKind::Down(_), true) = (event.kind, event.row + 1 == list_top) {
            if let Some(id) = super::render::tab_at(self, event.column) {
                self.show(id);
            }
            return;
        }
        if let MouseEventKind::Down(_) = event.kind {
            let (column, row) = (event.column, event.row.saturating_sub(list_top));
            if self.with_panel(self.panel, |panel, ctx| panel.on_click(column, row, ctx)) {
                return;
            }
        }
        match event.kind {
            // On the hex view the wheel scrolls the bytes, not the cursor.
            MouseEventKind::ScrollDown if self.panel == PanelId::Hex => {
                self.hex.top_row = self.hex.top_row.saturating_add(3)
            }
            MouseEventKind::ScrollUp if self.panel == PanelId::Hex => {
                self.hex.top_row = self.hex.top_row.saturating_sub(3)
            }
            MouseEventKind::ScrollDown => self.nav(Nav::Down),
            MouseEventKind::ScrollUp => self.nav(Nav::Up),
            MouseEventKind::Down(_) if event.column < LIST_WIDTH && event.row > list_top => {
                let index = self.list_first + usize::from(event.row - list_top - 1);
                if let Some(offset) = self.rows.get(index).map(|row| row.offset) {
                    self.select(index);
                    if let Some(offset) = offset {
                        self.goto(offset);
                    }
                }
            }
            _ => {}
        }
    }
}
