//! The panels, one file each, and the registry that puts them in tab order.
//!
//! A new panel is a file here with a type that implements `Panel` (and
//! `Default`), its `mod` line, and one line in `registry!` below; the tab
//! bar, the number keys, the help and the routing follow from the registry.

pub mod bench;
pub mod decoder;
pub mod hex_view;
pub mod integrity;
pub mod osd;
pub mod overview;

use super::panel::registry;

registry! {
    Overview => overview: overview::Overview,
    Hex => hex_view: hex_view::HexView,
    Decoder => decoder: decoder::Decoder,
    Integrity => integrity: integrity::Integrity,
    Osd => osd: osd::OsdPanel,
    Bench => bench: bench::BenchPanel,
}

impl PanelId {
    /// Place in tab order (also the number key, from 1).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The panel at `index` in tab order.
    pub fn at(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::{PanelId, Panels};
    use crate::app::keys::{panel_number, KeyHelp, GLOBAL};

    /// Keys a panel deliberately takes from the global bindings.
    /// Panel keys allowed to hide a global one: none. One key, one meaning.
    const SHADOWS: &[(PanelId, char)] = &[];

    fn plain(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    /// Every key worth trying: printable ASCII with and without Ctrl, and
    /// the named keys.
    fn probes() -> Vec<KeyEvent> {
        let named = [
            KeyCode::Left,
            KeyCode::Right,
            KeyCode::Up,
            KeyCode::Down,
            KeyCode::PageUp,
            KeyCode::PageDown,
            KeyCode::Home,
            KeyCode::End,
            KeyCode::Tab,
            KeyCode::BackTab,
            KeyCode::Enter,
            KeyCode::Esc,
            KeyCode::Backspace,
        ];
        let chars = (' '..='~').map(KeyCode::Char);
        named
            .into_iter()
            .chain(chars)
            .flat_map(|code| {
                [KeyModifiers::NONE, KeyModifiers::CONTROL]
                    .map(|modifiers| KeyEvent::new(code, modifiers))
            })
            .collect()
    }

    fn matching<'a>(bindings: &'a [KeyHelp], key: &KeyEvent) -> Vec<&'a KeyHelp> {
        bindings.iter().filter(|b| (b.matches)(key)).collect()
    }

    #[test]
    fn no_two_bindings_share_a_key() {
        let panels = Panels::default();
        let global: Vec<KeyHelp> = GLOBAL.iter().map(|b| b.help_only()).collect();
        for key in probes() {
            let globals = matching(&global, &key).len() + usize::from(panel_number(&key).is_some());
            assert!(globals <= 1, "{key:?} has {globals} global bindings");
            for &id in PanelId::ALL {
                let own = panels.get(id).key_help();
                let hits = matching(&own, &key);
                assert!(
                    hits.len() <= 1,
                    "{key:?} has {} bindings in {id:?}",
                    hits.len()
                );
                if !hits.is_empty() && globals > 0 {
                    let allowed = SHADOWS.iter().any(|&(p, c)| p == id && key == plain(c));
                    assert!(allowed, "{key:?}: {id:?} hides a global binding");
                }
            }
        }
    }

    #[test]
    fn every_shadow_is_still_needed() {
        let panels = Panels::default();
        for &(id, c) in SHADOWS {
            let key = plain(c);
            let own = panels.get(id).key_help();
            let global: Vec<KeyHelp> = GLOBAL.iter().map(|b| b.help_only()).collect();
            let hides = !matching(&own, &key).is_empty() && !matching(&global, &key).is_empty();
            assert!(hides, "{id:?}'s {c:?} hides nothing: drop it from SHADOWS");
        }
    }

    #[test]
    fn the_number_keys_reach_every_panel() {
        assert!(PanelId::ALL.len() <= 9, "panels past 9 have no number key");
        for (i, &id) in PanelId::ALL.iter().enumerate() {
            assert_eq!(id.index(), i);
            assert_eq!(PanelId::at(i), Some(id));
        }
    }
}
