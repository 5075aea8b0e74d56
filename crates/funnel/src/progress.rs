//! Progress for long commands (simulate, emit, import, export, replay, verify): on a terminal a
//! bar redrawn in place with the rate and the time left; otherwise a plain line every few
//! seconds, so logs and CI output stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a plain (non-terminal) progress line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// How often the terminal bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(100);

pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    started: Instant,
    drawn: Option<Instant>,
    terminal: bool,
    quiet: bool,
}

impl Progress {
    /// `total` when known (a bar with ETA), else a running count. `quiet` (for `--json`) draws nothing.
    pub fn new(what: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        Progress {
            what,
            total,
            started: Instant::now(),
            drawn: None,
            terminal: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    pub fn update(&mut self, done: u64) {
        if self.quiet {
            return;
        }
        let every = if self.terminal { DRAW_EVERY } else { PLAIN_EVERY };
        let due = self
            .drawn
            .map_or(self.started.elapsed() >= every, |t| t.elapsed() >= every);
        if !due {
            return;
        }
        self.drawn = Some(Instant::now());
        let line = self.line(done);
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
    }

    /// Ends the bar; `summary` replaces it.
    pub fn finish(&self, summary: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal && self.drawn.is_some() {
            writeln!(err, "\r\x1b[2K{summary}")
        } else {
            writeln!(err, "{summary}")
        };
    }

    fn line(&self, done: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        match self.total.filter(|t| *t > 0) {
            Some(total) => {
                let share = (done as f64 / total as f64).min(1.0);
                let left = if rate > 0.0 {
                    (total.saturating_sub(done)) as f64 / rate
                } else {
                    f64::NAN
                };
                let bar = if self.terminal {
                    let full = (share * 24.0).round() as usize;
                    format!("[{}{}] ", "█".repeat(full), "·".repeat(24 - full))
                } else {
                    String::new()
                };
                format!(
                    "{} {bar}{done}/{total} ({:.0}%) · {:.0}/s · {} left",
                    self.what,
                    share * 100.0,
                    rate,
                    eta(left)
                )
            }
            None => format!("{} {done} · {rate:.0}/s", self.what),
        }
    }
}

fn eta(secs: f64) -> String {
    if !secs.is_finite() {
        return "–".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// What erases a progress bar before a final line: nothing when stderr is not a terminal.
pub fn clear() -> &'static str {
    if std::io::stderr().is_terminal() {
        "\r\x1b[2K"
    } else {
        ""
    }
}
