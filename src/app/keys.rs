//! The key table: one list drives key handling, the help overlay and the
//! status-line hints, so they cannot disagree.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::state::PanelId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    Help,
    NextPanel,
    PrevPanel,
    Panel(PanelId),
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    PrevSection,
    NextSection,
    StartJump,
    StartSearch,
    SearchNext,
    SearchPrev,
    ToggleEndian,
    Verify,
    RankDown,
    RankUp,
    SparsityDown,
    SparsityUp,
    ToggleMethod,
    AlphaDown,
    AlphaUp,
    RunTune,
    SaveOsd,
    ExportPlot,
    RunBench,
    BenchView,
    BenchDevice,
    HotSwap,
    ExportBenchJson,
    ExportBenchSvg,
    ExportBenchPng,
}

/// One binding: which keys, what they do, where (None = every panel).
pub struct Binding {
    pub keys: &'static str,
    pub help: &'static str,
    pub panel: Option<PanelId>,
    pub action: Action,
    pub matches: fn(&KeyEvent) -> bool,
}

fn plain(key: &KeyEvent, code: KeyCode) -> bool {
    key.code == code && !key.modifiers.contains(KeyModifiers::CONTROL)
}

/// Every binding, in help order.
pub static BINDINGS: &[Binding] = &[
    Binding {
        keys: "←→ / h l",
        help: "rank −/+",
        panel: Some(PanelId::Osd),
        action: Action::RankDown,
        matches: |k| k.code == KeyCode::Left || plain(k, KeyCode::Char('h')),
    },
    Binding {
        keys: "",
        help: "",
        panel: Some(PanelId::Osd),
        action: Action::RankUp,
        matches: |k| k.code == KeyCode::Right || plain(k, KeyCode::Char('l')),
    },
    Binding {
        keys: "- +",
        help: "sparsity −/+ 0.05",
        panel: Some(PanelId::Osd),
        action: Action::SparsityDown,
        matches: |k| plain(k, KeyCode::Char('-')),
    },
    Binding {
        keys: "",
        help: "",
        panel: Some(PanelId::Osd),
        action: Action::SparsityUp,
        matches: |k| plain(k, KeyCode::Char('+')) || plain(k, KeyCode::Char('=')),
    },
    Binding {
        keys: "m",
        help: "method osd/blend",
        panel: Some(PanelId::Osd),
        action: Action::ToggleMethod,
        matches: |k| plain(k, KeyCode::Char('m')),
    },
    Binding {
        keys: "a A",
        help: "blend α −/+",
        panel: Some(PanelId::Osd),
        action: Action::AlphaDown,
        matches: |k| plain(k, KeyCode::Char('a')),
    },
    Binding {
        keys: "",
        help: "",
        panel: Some(PanelId::Osd),
        action: Action::AlphaUp,
        matches: |k| plain(k, KeyCode::Char('A')),
    },
    Binding {
        keys: "t",
        help: "tune grid",
        panel: Some(PanelId::Osd),
        action: Action::RunTune,
        matches: |k| plain(k, KeyCode::Char('t')),
    },
    Binding {
        keys: "s",
        help: "save as .osd.expert",
        panel: Some(PanelId::Osd),
        action: Action::SaveOsd,
        matches: |k| plain(k, KeyCode::Char('s')),
    },
    Binding {
        keys: "p",
        help: "export plot (SVG)",
        panel: Some(PanelId::Osd),
        action: Action::ExportPlot,
        matches: |k| plain(k, KeyCode::Char('p')),
    },
    Binding {
        keys: "r",
        help: "run the benchmark",
        panel: Some(PanelId::Bench),
        action: Action::RunBench,
        matches: |k| plain(k, KeyCode::Char('r')),
    },
    Binding {
        keys: "t",
        help: "view: bars, table, hot-swap",
        panel: Some(PanelId::Bench),
        action: Action::BenchView,
        matches: |k| plain(k, KeyCode::Char('t')),
    },
    Binding {
        keys: "d",
        help: "device of the next run (cpu, cuda:N)",
        panel: Some(PanelId::Bench),
        action: Action::BenchDevice,
        matches: |k| plain(k, KeyCode::Char('d')),
    },
    Binding {
        keys: "w",
        help: "hot-swap demo",
        panel: Some(PanelId::Bench),
        action: Action::HotSwap,
        matches: |k| plain(k, KeyCode::Char('w')),
    },
    Binding {
        keys: "j",
        help: "export JSON",
        panel: Some(PanelId::Bench),
        action: Action::ExportBenchJson,
        matches: |k| plain(k, KeyCode::Char('j')),
    },
    Binding {
        keys: "p P",
        help: "export plot SVG/PNG",
        panel: Some(PanelId::Bench),
        action: Action::ExportBenchSvg,
        matches: |k| plain(k, KeyCode::Char('p')),
    },
    Binding {
        keys: "",
        help: "",
        panel: Some(PanelId::Bench),
        action: Action::ExportBenchPng,
        matches: |k| plain(k, KeyCode::Char('P')),
    },
    Binding {
        keys: "q",
        help: "quit",
        panel: None,
        action: Action::Quit,
        matches: |k| {
            plain(k, KeyCode::Char('q'))
                || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
        },
    },
    Binding {
        keys: "?",
        help: "help",
        panel: None,
        action: Action::Help,
        matches: |k| plain(k, KeyCode::Char('?')),
    },
    Binding {
        keys: "Tab/S-Tab",
        help: "next/previous panel",
        panel: None,
        action: Action::NextPanel,
        matches: |k| k.code == KeyCode::Tab,
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::PrevPanel,
        matches: |k| k.code == KeyCode::BackTab,
    },
    Binding {
        keys: "1-6",
        help: "overview, hex, decoder, integrity, OSD, bench",
        panel: None,
        action: Action::Panel(PanelId::Overview),
        matches: |k| plain(k, KeyCode::Char('1')),
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::Panel(PanelId::Hex),
        matches: |k| plain(k, KeyCode::Char('2')),
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::Panel(PanelId::Decoder),
        matches: |k| plain(k, KeyCode::Char('3')),
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::Panel(PanelId::Integrity),
        matches: |k| plain(k, KeyCode::Char('4')),
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::Panel(PanelId::Osd),
        matches: |k| plain(k, KeyCode::Char('5')),
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::Panel(PanelId::Bench),
        matches: |k| plain(k, KeyCode::Char('6')),
    },
    Binding {
        keys: "↑↓ / k j",
        help: "move",
        panel: None,
        action: Action::Up,
        matches: |k| k.code == KeyCode::Up || plain(k, KeyCode::Char('k')),
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::Down,
        matches: |k| k.code == KeyCode::Down || plain(k, KeyCode::Char('j')),
    },
    Binding {
        keys: "←→ / h l",
        help: "byte left/right",
        panel: Some(PanelId::Hex),
        action: Action::Left,
        matches: |k| k.code == KeyCode::Left || plain(k, KeyCode::Char('h')),
    },
    Binding {
        keys: "",
        help: "",
        panel: Some(PanelId::Hex),
        action: Action::Right,
        matches: |k| k.code == KeyCode::Right || plain(k, KeyCode::Char('l')),
    },
    Binding {
        keys: "PgUp/PgDn",
        help: "page (scroll in decoder, bench)",
        panel: None,
        action: Action::PageUp,
        matches: |k| {
            k.code == KeyCode::PageUp
                || (k.code == KeyCode::Char('b') && k.modifiers.contains(KeyModifiers::CONTROL))
        },
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::PageDown,
        matches: |k| {
            k.code == KeyCode::PageDown
                || (k.code == KeyCode::Char('f') && k.modifiers.contains(KeyModifiers::CONTROL))
        },
    },
    Binding {
        keys: "g/G",
        help: "start/end of file",
        panel: Some(PanelId::Hex),
        action: Action::Home,
        matches: |k| k.code == KeyCode::Home || plain(k, KeyCode::Char('g')),
    },
    Binding {
        keys: "",
        help: "",
        panel: Some(PanelId::Hex),
        action: Action::End,
        matches: |k| k.code == KeyCode::End || plain(k, KeyCode::Char('G')),
    },
    Binding {
        keys: "[ ]",
        help: "previous/next section",
        panel: None,
        action: Action::PrevSection,
        matches: |k| plain(k, KeyCode::Char('[')),
    },
    Binding {
        keys: "",
        help: "",
        panel: None,
        action: Action::NextSection,
        matches: |k| plain(k, KeyCode::Char(']')),
    },
    Binding {
        keys: ": / C-j",
        help: "jump to offset (0x1f0, 496, +16, -0x10)",
        panel: Some(PanelId::Hex),
        action: Action::StartJump,
        matches: |k| {
            plain(k, KeyCode::Char(':'))
                || (k.code == KeyCode::Char('j') && k.modifiers.contains(KeyModifiers::CONTROL))
        },
    },
    Binding {
        keys: "/",
        help: "search text, or #hex bytes",
        panel: Some(PanelId::Hex),
        action: Action::StartSearch,
        matches: |k| plain(k, KeyCode::Char('/')),
    },
    Binding {
        keys: "n/N",
        help: "next/previous match",
        panel: Some(PanelId::Hex),
        action: Action::SearchNext,
        matches: |k| plain(k, KeyCode::Char('n')),
    },
    Binding {
        keys: "",
        help: "",
        panel: Some(PanelId::Hex),
        action: Action::SearchPrev,
        matches: |k| plain(k, KeyCode::Char('N')),
    },
    Binding {
        keys: "e",
        help: "toggle inspector endianness",
        panel: Some(PanelId::Hex),
        action: Action::ToggleEndian,
        matches: |k| plain(k, KeyCode::Char('e')),
    },
    Binding {
        keys: "v",
        help: "verify again",
        panel: Some(PanelId::Integrity),
        action: Action::Verify,
        matches: |k| plain(k, KeyCode::Char('v')),
    },
];

/// The action a key triggers in `panel`.
pub fn action_for(panel: PanelId, key: KeyEvent) -> Action {
    if key.code == KeyCode::Esc {
        return Action::Quit;
    }
    BINDINGS
        .iter()
        .filter(|b| b.panel.is_none_or(|p| p == panel))
        .find(|b| (b.matches)(&key))
        .map_or(Action::None, |b| b.action)
}

/// Short hints for the status line of `panel`.
pub fn hints(panel: PanelId) -> Vec<(&'static str, &'static str)> {
    BINDINGS
        .iter()
        .filter(|b| !b.keys.is_empty() && b.panel == Some(panel))
        .map(|b| (b.keys, b.help))
        .chain([("Tab", "panel"), ("?", "help"), ("q", "quit")])
        .collect()
}
