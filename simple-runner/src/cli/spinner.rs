//! The binary's pull spinner: how `simple-runner run` shows a pull on a terminal.

use std::time::Duration;

use indicatif::ProgressBar;
use simple_runner::engine::image::PullUpdate;

/// A spinner that draws the updates of a pull.
pub struct PullSpinner {
    bar: ProgressBar,
}

impl PullSpinner {
    /// A spinner ticking on its own, so that it turns while a layer is quiet.
    pub fn start() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar }
    }

    /// Draws `update`: a line becomes the message, the end clears the spinner.
    pub fn show(&self, update: PullUpdate) {
        match update {
            PullUpdate::Line(text) => self.bar.set_message(text),
            PullUpdate::Tick => self.bar.tick(),
            PullUpdate::Finished => self.bar.finish_and_clear(),
            _ => {}
        }
    }
}
