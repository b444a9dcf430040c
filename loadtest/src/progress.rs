//! A one-line progress bar on stderr, redrawn in place.

use std::io::Write;
use std::time::Instant;

pub struct Progress {
    label: &'static str,
    total: u64,
    started: Instant,
    enabled: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: u64, enabled: bool) -> Self {
        Self {
            label,
            total: total.max(1),
            started: Instant::now(),
            enabled,
        }
    }

    pub fn draw(&self, done: u64, note: &str) {
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 30;
        let frac = (done as f64 / self.total as f64).min(1.0);
        let filled = (frac * WIDTH as f64) as usize;
        let secs = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(0.001);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:<8} [{}{}] {:>7}/{:<7} {:>5.0}/s {:>5.1}s {note}\x1b[K",
            self.label,
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            done,
            self.total,
            rate,
            secs
        );
        let _ = err.flush();
    }

    pub fn finish(&self, done: u64, note: &str) {
        if self.enabled {
            self.draw(done, note);
            eprintln!();
        }
    }
}
