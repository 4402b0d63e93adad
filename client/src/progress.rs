//! Progress of the `sheen` command's long steps (`up`, `down`, mounting,
//! waiting for targets): one spinner line on stderr naming the step and
//! its elapsed time, and a line per finished step with how long it took.
//!
//! Owns: [`Progress`], shown only when asked for and stderr is a terminal
//! (never with `--json`, never into a pipe or a log: scripts and tests
//! read stdout and see nothing extra). Must not: write to stdout, or draw
//! while the caller prints its results (call [`Progress::done`] first).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use parking_lot::Mutex;

/// How often the spinner and its clock are redrawn.
const TICK: Duration = Duration::from_millis(100);

/// The steps of one command; a no-op when hidden.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The step under way and when it began.
    current: Mutex<Option<(String, Instant)>>,
}

impl Progress {
    /// Shows nothing (scripts, tests, library callers).
    pub fn hidden() -> Progress {
        Progress { bar: None, current: Mutex::new(None) }
    }

    /// Shown on stderr when `show` (not `--json`) and stderr is a terminal.
    pub fn on_terminal(show: bool) -> Progress {
        if !show || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let style = ProgressStyle::with_template("{spinner} {msg} {secs}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("secs", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1} s", s.elapsed().as_secs_f64());
            });
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style);
        Progress { bar: Some(bar), current: Mutex::new(None) }
    }

    /// Whether anything is drawn.
    pub fn shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Ends the step under way (if any) and starts `what`.
    pub fn step(&self, what: impl Into<String>) {
        let Some(bar) = &self.bar else { return };
        let what = what.into();
        let mut cur = self.current.lock();
        let prev = cur.replace((what.clone(), Instant::now()));
        // The new step first: the spinner redrawn under the finished
        // step's line is already the new one.
        bar.set_message(what);
        bar.reset_elapsed();
        bar.enable_steady_tick(TICK);
        if let Some((prev, t)) = prev {
            bar.println(finished_line(&prev, t.elapsed(), true));
        }
    }

    /// Ends the step under way as done and clears the spinner: call it
    /// before printing results on stdout.
    pub fn done(&self) {
        let Some(bar) = &self.bar else { return };
        bar.finish_and_clear();
        if let Some((prev, t)) = self.current.lock().take() {
            eprintln!("{}", finished_line(&prev, t.elapsed(), true));
        }
    }
}

impl Drop for Progress {
    /// A step still under way failed (the command returns its error).
    fn drop(&mut self) {
        let Some(bar) = &self.bar else { return };
        bar.finish_and_clear();
        if let Some((prev, t)) = self.current.lock().take() {
            eprintln!("{}", finished_line(&prev, t.elapsed(), false));
        }
    }
}

/// The line a finished step leaves.
fn finished_line(step: &str, took: Duration, ok: bool) -> String {
    let mark = if ok { "done" } else { "FAILED" };
    format!("  {step}: {mark} ({:.1} s)", took.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_progress_does_nothing() {
        let p = Progress::hidden();
        assert!(!p.shown());
        p.step("starting");
        p.done();
        assert!(p.current.lock().is_none());
    }

    #[test]
    fn json_output_never_shows_progress() {
        assert!(!Progress::on_terminal(false).shown());
    }

    #[test]
    fn finished_steps_say_how_long_they_took() {
        assert_eq!(
            finished_line("starting sheen-mds", Duration::from_millis(1300), true),
            "  starting sheen-mds: done (1.3 s)"
        );
        assert_eq!(finished_line("mounting", Duration::from_secs(3), false), "  mounting: FAILED (3.0 s)");
    }
}
