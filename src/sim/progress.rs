//! A one-line progress bar on stderr, drawn only when stderr is a terminal (so logs, pipes and
//! tests stay clean). Written by hand: twenty lines do not justify a dependency.

use std::io::{IsTerminal, Write};

/// Draws `label [#####-----]  50%` in place.
#[derive(Debug)]
pub struct Progress {
    label: String,
    enabled: bool,
}

impl Progress {
    /// A bar for `label`, shown if stderr is a terminal.
    pub fn new(label: &str) -> Self {
        Self { label: label.to_owned(), enabled: std::io::stderr().is_terminal() }
    }

    /// Shows `done` (0..=1).
    pub fn set(&mut self, done: f64) {
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 30;
        let filled = ((done.clamp(0.0, 1.0) * WIDTH as f64).round() as usize).min(WIDTH);
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH - filled));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{:<14} [{bar}] {:>3.0}%", self.label, done * 100.0);
        if done >= 1.0 {
            let _ = writeln!(err);
            self.enabled = false;
        }
        let _ = err.flush();
    }
}
