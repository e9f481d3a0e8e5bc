//! What a panel is. A panel owns its state and its background jobs, draws
//! itself, declares its keys and answers them; it sees the rest of the app
//! only through a `Context`. `App` keeps one of each (see `panels/mod.rs`)
//! and routes keys, mouse and background results to the one on screen.

use std::any::Any;

use crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::Frame;

use super::context::Context;
use super::keys::{Binding, KeyHelp, Nav};

/// A panel, as its author writes it.
pub trait Panel {
    /// The tab title.
    const TITLE: &'static str;
    /// How the help names it (`1-6  overview, hex, …`).
    const NAME: &'static str;
    /// What the panel's own keys do (`Infallible` when it binds none).
    type Action: Copy + 'static;
    /// What the panel's background jobs send back (`Infallible` when it runs none).
    type Message: Send + 'static;
    /// The panel's keys, in help order. They are looked up before the
    /// global ones; `panels::tests` checks they do not collide.
    const BINDINGS: &'static [Binding<Self::Action>];

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context);

    /// One of the panel's keys was pressed.
    fn on_action(&mut self, _action: Self::Action, _ctx: &mut Context) {}

    /// A result of one of the panel's jobs (started with `ctx.jobs.spawn`).
    fn on_message(&mut self, _message: Self::Message, _ctx: &mut Context) {}

    /// A movement key; `false` leaves it to the app (↑↓ then pick sections).
    fn on_nav(&mut self, _nav: Nav, _ctx: &mut Context) -> bool {
        false
    }

    /// The panel comes on screen.
    fn on_enter(&mut self, _ctx: &mut Context) {}

    /// A section was picked (perhaps the same one again); `shown` says
    /// whether this panel is on screen.
    fn on_select(&mut self, _shown: bool, _ctx: &mut Context) {}

    /// A click in the panel's area (`row` counted from its top); `false`
    /// leaves it to the app (the section list).
    fn on_click(&mut self, _column: u16, _row: u16, _ctx: &mut Context) -> bool {
        false
    }

    /// Whether a job is still running (tests and scripted runs wait for it).
    fn busy(&self) -> bool {
        false
    }
}

/// The face of a `Panel` that `App` stores and calls: the same methods with
/// the panel's own types hidden (keys arrive as key events, messages boxed).
pub trait AnyPanel {
    fn title(&self) -> &'static str;
    fn name(&self) -> &'static str;
    /// The panel's bindings, for the help and the hints.
    fn key_help(&self) -> Vec<KeyHelp>;
    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context);
    /// Runs the binding `key` matches; `false` when none does.
    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Context) -> bool;
    fn on_message(&mut self, message: Box<dyn Any + Send>, ctx: &mut Context);
    fn on_nav(&mut self, nav: Nav, ctx: &mut Context) -> bool;
    fn on_enter(&mut self, ctx: &mut Context);
    fn on_select(&mut self, shown: bool, ctx: &mut Context);
    fn on_click(&mut self, column: u16, row: u16, ctx: &mut Context) -> bool;
    fn busy(&self) -> bool;
}

impl<P: Panel> AnyPanel for P {
    fn title(&self) -> &'static str {
        P::TITLE
    }

    fn name(&self) -> &'static str {
        P::NAME
    }

    fn key_help(&self) -> Vec<KeyHelp> {
        P::BINDINGS.iter().map(Binding::help_only).collect()
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context) {
        Panel::draw(self, frame, area, ctx);
    }

    fn on_key(&mut self, key: &KeyEvent, ctx: &mut Context) -> bool {
        match P::BINDINGS.iter().find(|b| (b.matches)(key)) {
            Some(binding) => {
                self.on_action(binding.action, ctx);
                true
            }
            None => false,
        }
    }

    fn on_message(&mut self, message: Box<dyn Any + Send>, ctx: &mut Context) {
        // Jobs are started through the panel's own context, so a message of
        // another type is a bug in the panel: it is dropped.
        debug_assert!(message.is::<P::Message>(), "{}: foreign message", P::TITLE);
        if let Ok(message) = message.downcast::<P::Message>() {
            Panel::on_message(self, *message, ctx);
        }
    }

    fn on_nav(&mut self, nav: Nav, ctx: &mut Context) -> bool {
        Panel::on_nav(self, nav, ctx)
    }

    fn on_enter(&mut self, ctx: &mut Context) {
        Panel::on_enter(self, ctx);
    }

    fn on_select(&mut self, shown: bool, ctx: &mut Context) {
        Panel::on_select(self, shown, ctx);
    }

    fn on_click(&mut self, column: u16, row: u16, ctx: &mut Context) -> bool {
        Panel::on_click(self, column, row, ctx)
    }

    fn busy(&self) -> bool {
        Panel::busy(self)
    }
}

/// Declares the panels, in tab order, one line each:
/// `Variant => field: Type`. It makes `PanelId` (one variant each, with
/// `ALL` and `title`) and `Panels` (one public field each, holding that
/// panel's state).
macro_rules! registry {
    ($($(#[$doc:meta])* $id:ident => $field:ident: $panel:ty),+ $(,)?) => {
        /// Which panel is on screen.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum PanelId {
            $($id),+
        }

        impl PanelId {
            /// Every panel, in tab order.
            pub const ALL: &'static [PanelId] = &[$(PanelId::$id),+];

            /// The tab title.
            pub fn title(self) -> &'static str {
                match self {
                    $(PanelId::$id => <$panel as $crate::app::panel::Panel>::TITLE),+
                }
            }
        }

        /// One of each panel: its state and its jobs.
        #[derive(Default)]
        pub struct Panels {
            $($(#[$doc])* pub $field: $panel),+
        }

        impl Panels {
            pub fn get(&self, id: PanelId) -> &dyn $crate::app::panel::AnyPanel {
                match id {
                    $(PanelId::$id => &self.$field),+
                }
            }

            pub fn get_mut(&mut self, id: PanelId) -> &mut dyn $crate::app::panel::AnyPanel {
                match id {
                    $(PanelId::$id => &mut self.$field),+
                }
            }
        }
    };
}

pub(crate) use registry;
