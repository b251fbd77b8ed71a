//! Progress bars for long work, drawn with indicatif on stderr — only when
//! stderr is a terminal and `-q` was not given, so pipes, CI logs and
//! scripts never see one. The cache reports through [`cache::Progress`];
//! this is the only implementation.
//!
//! A bar appears only for work big enough to be worth watching: a walk once
//! it has seen [`WALK_MIN`] directory entries, a phase of known size (a
//! batch, the metadata pass of an eviction) when it has at least
//! [`COUNTED_MIN`] items.
//!
//! [`cache::Progress`]: crate::cache::Progress

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::Duration;

use clap::ArgMatches;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cache::Progress;

/// Directory entries a walk must pass before its spinner shows.
pub(crate) const WALK_MIN: u64 = 100_000;
/// Items a counted phase must have for its bar to show.
pub(crate) const COUNTED_MIN: u64 = 10_000;

/// A bar for this call, or `None` when stderr is not a terminal or the
/// applet's `-q` was given.
pub(crate) fn for_call(m: &ArgMatches) -> Option<Box<dyn Progress>> {
    unless_quiet(matches!(m.try_get_one::<bool>("quiet"), Ok(Some(true))))
}

/// [`for_call`] for a call whose `-q` is `quiet`.
pub(crate) fn unless_quiet(quiet: bool) -> Option<Box<dyn Progress>> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(Box::new(TermBar::default()))
}

/// One bar per phase, drawn to stderr once the phase is big enough.
#[derive(Default)]
struct TermBar {
    bar: RefCell<Option<(ProgressBar, bool)>>,
}

impl TermBar {
    fn show(bar: &ProgressBar) {
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        bar.enable_steady_tick(Duration::from_millis(100));
    }
}

impl Progress for TermBar {
    fn start(&self, what: &'static str, total: Option<u64>) {
        self.finish();
        let (bar, style) = match total {
            Some(n) => (
                ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::hidden()),
                ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} ({eta})"),
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
                ProgressStyle::with_template("{spinner} {msg}: {human_pos} files"),
            ),
        };
        if let Ok(style) = style {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        let shown = total.is_some_and(|n| n >= COUNTED_MIN);
        if shown {
            Self::show(&bar);
        }
        *self.bar.borrow_mut() = Some((bar, shown));
    }

    fn advance(&self, n: u64) {
        let mut slot = self.bar.borrow_mut();
        let Some((bar, shown)) = slot.as_mut() else {
            return;
        };
        bar.inc(n);
        if !*shown && bar.length().is_none() && bar.position() >= WALK_MIN {
            *shown = true;
            Self::show(bar);
        }
    }

    fn finish(&self) {
        if let Some((bar, _)) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for TermBar {
    /// An error return skips `finish`; never leave a bar on the screen.
    fn drop(&mut self) {
        self.finish();
    }
}
