//! A one-line progress display on stderr, only when stderr is a terminal and the caller asked for neither
//! `-v` step lines nor `--json`. Quiet otherwise, so logs and pipes stay clean.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Progress {
    what: String,
    total: u64,
    done: AtomicU64,
    /// When the line was last drawn; None until the first draw (which happens at once).
    last: Mutex<Option<Instant>>,
}

impl Progress {
    /// A progress line for `what`, or None when stderr is not a terminal or `quiet` is set.
    pub fn new(what: &str, total: u64, quiet: bool) -> Option<Progress> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Progress { what: what.to_string(), total, done: AtomicU64::new(0), last: Mutex::new(None) })
    }

    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last.lock().unwrap();
        if last.is_some_and(|t| t.elapsed().as_millis() < 100) {
            return;
        }
        *last = Some(Instant::now());
        self.draw(done);
    }

    fn draw(&self, done: u64) {
        let mb = |b: u64| b as f64 / 1e6;
        let line = if self.total > 0 {
            let pct = (done as f64 * 100.0 / self.total as f64).min(100.0);
            let filled = (pct / 5.0) as usize;
            format!(
                "\r{} [{}{}] {:5.1} MB {pct:3.0}%",
                self.what,
                "#".repeat(filled),
                " ".repeat(20 - filled),
                mb(done)
            )
        } else {
            format!("\r{} {:.1} MB", self.what, mb(done))
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Clear the line so the next message starts clean.
        if self.last.lock().map(|l| l.is_some()).unwrap_or(false) {
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
        }
    }
}

/// A reader that reports the bytes it passes to a [`Progress`].
pub struct ProgressReader<'p, R> {
    pub inner: R,
    pub progress: Option<&'p Progress>,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            p.add(n as u64);
        }
        Ok(n)
    }
}
