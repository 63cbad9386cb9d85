//! Terminal progress for the training worker (`indicatif`).
//!
//! Owns the intake spinner (examples received, malformed) and the training bar (epoch, loss,
//! accuracy, examples/s). Both are hidden when stderr is not a terminal or when the caller asks
//! (`--no-progress`). It does not own the numbers it shows.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tensorq_train::trainer::FitEvent;

/// Progress display policy.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// Visible only when `wanted` and stderr is a terminal.
    pub fn new(wanted: bool) -> Self {
        Progress {
            visible: wanted && std::io::stderr().is_terminal(),
        }
    }

    /// Whether bars are drawn.
    pub fn visible(&self) -> bool {
        self.visible
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }

    /// A spinner for the intake phase.
    pub fn intake(&self) -> ProgressBar {
        let pb = ProgressBar::with_draw_target(None, self.target());
        pb.set_style(bar_style("{spinner} receiving: {msg}"));
        pb
    }

    /// A bar over `epochs * batches` steps for one `fit`.
    pub fn fit_bar(&self, epochs: usize, batches: usize) -> ProgressBar {
        let pb = ProgressBar::with_draw_target(Some((epochs * batches) as u64), self.target());
        pb.set_style(bar_style(
            "{bar:30} epoch {prefix} {msg} [{elapsed_precise}]",
        ));
        pb
    }
}

/// Updates `pb` from a fit event; returns the line to log when an epoch ends.
pub fn on_fit_event(
    pb: &ProgressBar,
    epochs_in_call: usize,
    first_epoch: usize,
    ev: FitEvent,
) -> Option<String> {
    match ev {
        FitEvent::Batch(b) => {
            pb.inc(1);
            pb.set_prefix(format!("{}/{}", b.epoch + 1 - first_epoch, epochs_in_call));
            pb.set_message(format!(
                "- loss: {:.4} - accuracy: {:.4} - {:.0} examples/s",
                b.loss, b.accuracy, b.examples_per_sec
            ));
            None
        }
        FitEvent::Epoch(s) => Some(format!(
            "Epoch {}/{} - {} examples - {:.2}s - loss: {:.4} - accuracy: {:.4}",
            s.epoch + 1 - first_epoch,
            epochs_in_call,
            s.examples,
            s.seconds,
            s.loss,
            s.accuracy
        )),
    }
}
