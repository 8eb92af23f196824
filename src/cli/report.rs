//! Progress bars (indicatif) and notices on stderr.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tstore::progress::Progress;

pub struct Reporter {
    quiet: bool,
    verbose: u8,
    bar: Mutex<Option<ProgressBar>>,
    /// Items done and total, shown beside a bytes bar.
    items: AtomicU64,
    items_total: AtomicU64,
    counts_bytes: std::sync::atomic::AtomicBool,
}

impl Reporter {
    pub fn new(quiet: bool, verbose: u8) -> Self {
        Self {
            quiet,
            verbose,
            bar: Mutex::new(None),
            items: AtomicU64::new(0),
            items_total: AtomicU64::new(0),
            counts_bytes: false.into(),
        }
    }

    pub fn verbose(&self) -> bool {
        self.verbose > 0
    }

    /// A line of the final summary (shown even with -q).
    pub fn summary(&self, line: &str) {
        self.print(line);
    }

    fn print(&self, line: &str) {
        let bar = self.bar.lock().unwrap();
        match bar.as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Reporter {
    fn start(&self, phase: &str, items: u64, bytes: u64) {
        if self.quiet {
            return;
        }
        let counts_bytes = bytes > 0;
        let bar = if counts_bytes {
            ProgressBar::new(bytes).with_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            )
        } else if items > 0 {
            ProgressBar::new(items).with_style(
                ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            )
        } else {
            ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {prefix} {elapsed}")
                    .expect("valid template"),
            )
        };
        bar.set_prefix(phase.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.items.store(0, Ordering::Relaxed);
        self.items_total.store(items, Ordering::Relaxed);
        self.counts_bytes.store(counts_bytes, Ordering::Relaxed);
        if counts_bytes {
            bar.set_message(format!("0/{items} packages"));
        }
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn bytes(&self, bytes: u64) {
        if let Some(bar) = self.bar.lock().unwrap().as_ref()
            && self.counts_bytes.load(Ordering::Relaxed)
        {
            bar.inc(bytes);
        }
    }

    fn item_done(&self, _name: &str) {
        let done = self.items.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = self.bar.lock().unwrap().as_ref() {
            if self.counts_bytes.load(Ordering::Relaxed) {
                bar.set_message(format!(
                    "{done}/{} packages",
                    self.items_total.load(Ordering::Relaxed)
                ));
            } else {
                bar.inc(1);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }

    fn notice(&self, message: &str) {
        if !self.quiet {
            self.print(&format!("note: {message}"));
        }
    }

    fn detail(&self, message: &str) {
        if self.verbose > 0 {
            self.print(&format!("  {message}"));
        }
    }
}
