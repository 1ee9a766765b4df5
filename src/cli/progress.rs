//! The progress line on stderr for long work (many VMs, `apply`, waiting for a guest to
//! answer): drawn from the library's `progress::Progress` calls, only when stderr is a
//! terminal and the output is text, and cleared before the report is printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vbridge::progress::Progress;

/// One line, redrawn in place. Hidden until the library first reports, so a command that
/// reports nothing (net-define, doctor) draws nothing.
pub struct Line {
    bar: ProgressBar,
    shown: AtomicBool,
}

impl Line {
    /// A line for this run, or None when it must not draw: JSON output, `-q`, or a stderr
    /// that is not a terminal (a pipe, a file, a CI log).
    pub fn for_run(text_output: bool, quiet: bool, stderr_terminal: bool) -> Option<Arc<Line>> {
        (text_output && !quiet && stderr_terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            bar.set_style(spinner());
            Arc::new(Line {
                bar,
                shown: AtomicBool::new(false),
            })
        })
    }

    /// Start drawing, in the style set before (a spinner unless a stage began).
    fn show(&self) {
        if !self.shown.swap(true, Ordering::SeqCst) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            // The spinner moves while one VM takes long (a slow host, a guest's DHCP).
            self.bar.enable_steady_tick(Duration::from_millis(100));
        }
    }

    /// Erase the line, so the report starts on a clean one.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

fn spinner() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn counted() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} [{bar:24}] {pos}/{len} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Line {
    fn begin(&self, stage: &str, total: usize) {
        self.bar.set_style(counted());
        self.bar.set_prefix(stage.to_string());
        self.bar.set_message("");
        self.bar.set_length(total as u64);
        self.bar.set_position(0);
        self.show();
    }

    fn done(&self, item: &str) {
        self.bar.set_message(item.to_string());
        self.bar.inc(1);
    }

    fn waiting(&self, item: &str, left: Duration) {
        self.show();
        self.bar.set_message(format!(
            "{item}: waiting for a LAN address that answers ({} s left)",
            left.as_secs_f64().ceil()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_only_for_text_on_a_terminal_without_q() {
        assert!(Line::for_run(true, false, true).is_some());
        assert!(Line::for_run(false, false, true).is_none(), "JSON");
        assert!(Line::for_run(true, true, true).is_none(), "-q");
        assert!(
            Line::for_run(true, false, false).is_none(),
            "not a terminal"
        );
    }
}
