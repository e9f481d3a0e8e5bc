//! Keys. Every panel declares its own bindings (in its file) with the
//! `Binding` type here; this file holds the global ones: quit, help,
//! switching panels, and the movement keys each panel gives its meaning.
//! One list per scope drives key handling, the help overlay and the
//! status-line hints, so they cannot disagree.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// One binding: which keys, what they do.
pub struct Binding<A> {
    /// The keys as the help shows them; empty for the second half of a pair
    /// (`←→` is one help row for two bindings).
    pub keys: &'static str,
    pub help: &'static str,
    /// Where the help overlay lists it.
    pub group: HelpGroup,
    pub action: A,
    pub matches: fn(&KeyEvent) -> bool,
}

/// A binding without its action: what the help and the checks need.
pub type KeyHelp = Binding<()>;

impl<A> Binding<A> {
    pub fn help_only(&self) -> KeyHelp {
        Binding {
            keys: self.keys,
            help: self.help,
            group: self.group,
            action: (),
            matches: self.matches,
        }
    }
}

/// Where a binding is listed in the help overlay. Groups come in this
/// order; inside one, the global bindings first, then each panel's in tab
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelpGroup {
    /// A panel's sliders, runs and exports.
    Controls,
    /// Quit, help, switching panels.
    App,
    /// Moving by a line or a byte.
    Move,
    /// Moving by a page or to the ends.
    Page,
    /// Moving between sections.
    Section,
    /// Jumping, searching, checking.
    Inspect,
}

impl HelpGroup {
    pub const ALL: [HelpGroup; 6] = [
        Self::Controls,
        Self::App,
        Self::Move,
        Self::Page,
        Self::Section,
        Self::Inspect,
    ];
}

/// The movement keys: global, but each panel decides what they move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Up,
    Down,
    PageUp,
    PageDown,
}

/// What a global key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    NextPanel,
    PrevPanel,
    /// Show the panel at this place in tab order (the number keys).
    Show(usize),
    Nav(Nav),
    PrevSection,
    NextSection,
}

/// `code` without Ctrl.
pub fn plain(key: &KeyEvent, code: KeyCode) -> bool {
    key.code == code && !key.modifiers.contains(KeyModifiers::CONTROL)
}

/// Ctrl + `c`.
pub fn ctrl(key: &KeyEvent, c: char) -> bool {
    key.code == KeyCode::Char(c) && key.modifiers.contains(KeyModifiers::CONTROL)
}

/// The global bindings, in help order; the number keys are `panel_number`.
pub const GLOBAL: &[Binding<Command>] = &[
    Binding {
        keys: "q",
        help: "quit",
        group: HelpGroup::App,
        action: Command::Quit,
        matches: |k| plain(k, KeyCode::Char('q')) || ctrl(k, 'c'),
    },
    Binding {
        keys: "?",
        help: "help",
        group: HelpGroup::App,
        action: Command::Help,
        matches: |k| plain(k, KeyCode::Char('?')),
    },
    Binding {
        keys: "Tab/S-Tab",
        help: "next/previous panel",
        group: HelpGroup::App,
        action: Command::NextPanel,
        matches: |k| k.code == KeyCode::Tab,
    },
    Binding {
        keys: "",
        help: "",
        group: HelpGroup::App,
        action: Command::PrevPanel,
        matches: |k| k.code == KeyCode::BackTab,
    },
    Binding {
        keys: "↑↓ / k j",
        help: "move",
        group: HelpGroup::Move,
        action: Command::Nav(Nav::Up),
        matches: |k| k.code == KeyCode::Up || plain(k, KeyCode::Char('k')),
    },
    Binding {
        keys: "",
        help: "",
        group: HelpGroup::Move,
        action: Command::Nav(Nav::Down),
        matches: |k| k.code == KeyCode::Down || plain(k, KeyCode::Char('j')),
    },
    Binding {
        keys: "PgUp/PgDn",
        help: "page (scroll in decoder, bench)",
        group: HelpGroup::Page,
        action: Command::Nav(Nav::PageUp),
        matches: |k| k.code == KeyCode::PageUp || ctrl(k, 'b'),
    },
    Binding {
        keys: "",
        help: "",
        group: HelpGroup::Page,
        action: Command::Nav(Nav::PageDown),
        matches: |k| k.code == KeyCode::PageDown || ctrl(k, 'f'),
    },
    Binding {
        keys: "[ ]",
        help: "previous/next section",
        group: HelpGroup::Section,
        action: Command::PrevSection,
        matches: |k| plain(k, KeyCode::Char('[')),
    },
    Binding {
        keys: "",
        help: "",
        group: HelpGroup::Section,
        action: Command::NextSection,
        matches: |k| plain(k, KeyCode::Char(']')),
    },
];

/// `1`…`9`: the place in tab order of the panel to show.
pub fn panel_number(key: &KeyEvent) -> Option<usize> {
    match key.code {
        KeyCode::Char(c @ '1'..='9') if !key.modifiers.contains(KeyModifiers::CONTROL) => {
            c.to_digit(10).map(|d| d as usize - 1)
        }
        _ => None,
    }
}

/// The global command of `key`, if any.
pub fn global_command(key: &KeyEvent) -> Option<Command> {
    GLOBAL
        .iter()
        .find(|b| (b.matches)(key))
        .map(|b| b.action)
        .or_else(|| panel_number(key).map(Command::Show))
}
