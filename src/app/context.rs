//! What a panel may see and change of the app: the open file, what is known
//! about it, and the state panels share (the picked section, the byte
//! cursor, the message line). Panels get a `Context` instead of `App`, so a
//! panel cannot reach into another panel, and no panel file imports `App`.

use std::path::PathBuf;
use std::sync::Arc;

use ratatui::widgets::Paragraph;

use crate::diagnostics::Finding;
use crate::format::inspect::{region_at, Inspected, Region, SectionRow};

use super::checks::{TrustView, Verification};
use super::cursor::HexState;
use super::jobs::Jobs;
use super::prompt::{Prompt, PromptKind};
use super::theme::Theme;
use super::widgets;

/// A panel's view of the app for the length of one call (built by `App`).
pub struct Context<'a> {
    /// The open file.
    pub doc: &'a Arc<Inspected>,
    /// Its structure, for colouring and naming bytes.
    pub regions: &'a [Region],
    /// Its sections, as the lists show them.
    pub rows: &'a [SectionRow],
    /// The section picked in the lists (the app changes it, then tells
    /// every panel through `Panel::on_pick`).
    pub selected: usize,
    /// First row the section list showed (set while drawing, read by mouse clicks).
    pub list_first: &'a mut usize,
    pub verification: &'a mut Verification,
    /// What `validate` says of the file.
    pub findings: &'a [Finding],
    /// The signature under the trust policy (`None`: no policy given).
    pub trust: Option<&'a TrustView>,
    pub hex: &'a mut HexState,
    pub prompt: &'a mut Option<Prompt>,
    /// The status line's message.
    pub message: &'a mut String,
    pub theme: Theme,
    /// Background work on behalf of this panel.
    pub jobs: Jobs,
}

impl Context<'_> {
    /// Moves the byte cursor, keeping it inside the file and on screen.
    pub fn goto(&mut self, offset: u64) {
        self.hex.goto(offset, self.doc.len());
    }

    /// Jumps to `offset`, its row near the top of the view.
    pub fn jump(&mut self, offset: u64) {
        self.hex.jump(offset, self.doc.len());
    }

    /// Moves the byte cursor by `delta` bytes.
    pub fn step(&mut self, delta: i64) {
        self.hex.step(delta, self.doc.len());
    }

    /// The structure region under the byte cursor.
    pub fn region_at_cursor(&self) -> Option<&Region> {
        region_at(self.regions, self.hex.cursor)
    }

    /// Finds the next (or previous) match of the search pattern, wrapping.
    pub fn search(&mut self, forward: bool) {
        *self.message = self.hex.search(&self.doc.bytes, forward);
    }

    /// The section list for a panel `height` rows tall; it remembers the
    /// first row shown, for mouse clicks.
    pub fn section_list(&mut self, height: u16) -> Paragraph<'static> {
        let (list, first) = widgets::section_list(
            self.rows,
            self.selected,
            self.verification,
            self.theme,
            height,
        );
        *self.list_first = first;
        list
    }

    /// Opens the prompt line at the bottom of the screen.
    pub fn open_prompt(&mut self, kind: PromptKind) {
        *self.prompt = Some(Prompt::new(kind));
    }

    /// Hashes every section again, in the background.
    pub fn start_verification(&mut self) {
        let Some(reader) = self.doc.reader().cloned() else {
            return;
        };
        if !self.doc.sections_present() {
            // A remote expert still arriving: unfetched bytes are zeros.
            *self.message = "still fetching: the check starts when every section is here".into();
            return;
        }
        *self.verification = Verification::Running;
        self.jobs.verify(reader);
    }

    /// Where saves and exports write: beside the file, or `demo` in the
    /// working directory for the embedded demo.
    pub fn output_stem(&self) -> PathBuf {
        match self.doc.reader().and_then(|r| r.path()) {
            Some(path) => path.with_extension(""),
            None => PathBuf::from("demo"),
        }
    }
}
