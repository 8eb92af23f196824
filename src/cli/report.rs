//! Progress bars (indicatif) and notices on stderr, and how figures read
//! in the summaries (bytes, plurals, dates).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tstore::materialize::LinkMethod;
use tstore::progress::Progress;

pub struct Reporter {
    quiet: bool,
    verbose: u8,
    /// Whether bars are drawn (`--no-progress`, `TSTORE_NO_PROGRESS`).
    bars: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// Items done and total, shown beside a bytes bar.
    items: AtomicU64,
    items_total: AtomicU64,
    counts_bytes: std::sync::atomic::AtomicBool,
}

impl Reporter {
    pub fn new(output: super::settings::Output) -> Self {
        Self {
            quiet: output.quiet,
            verbose: output.verbose,
            bars: output.progress,
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
        if self.quiet || !self.bars {
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

/// The schema version every `--json` output carries as `version`. It goes
/// up when a field changes meaning or goes away (not when one is added).
pub const JSON_VERSION: u32 = 1;

/// Prints a `--json` answer: `body`'s named fields (an object, never an
/// array) after the schema `version`.
pub fn print_json(body: impl serde::Serialize) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Versioned<T> {
        version: u32,
        #[serde(flatten)]
        body: T,
    }
    let text = serde_json::to_string_pretty(&Versioned {
        version: JSON_VERSION,
        body,
    })?;
    println!("{text}");
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` for unix seconds (UTC).
pub fn utc_time(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        return format!("1 {noun}");
    }
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{count} {stem}ies"),
        _ => format!("{count} {noun}s"),
    }
}

pub fn signed_bytes(bytes: i64) -> String {
    let sign = if bytes < 0 { "-" } else { "" };
    format!("{sign}{}", human_bytes(bytes.unsigned_abs()))
}

pub fn linked_verb(method: LinkMethod) -> &'static str {
    match method {
        LinkMethod::Reflink => "reflinked",
        LinkMethod::Hardlink => "hardlinked",
        LinkMethod::Copy => "copied",
    }
}

/// A binary unit chosen once for several figures.
pub struct ByteUnit(usize);

const BYTE_UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

impl ByteUnit {
    pub fn for_largest(figures: &[u64]) -> Self {
        let largest = figures.iter().copied().max().unwrap_or(0);
        let mut unit = 0;
        let mut value = largest as f64;
        while value >= 1024.0 && unit < BYTE_UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        Self(unit)
    }

    pub fn format(&self, bytes: u64) -> String {
        if self.0 == 0 {
            return format!("{bytes} B");
        }
        let value = bytes as f64 / 1024f64.powi(self.0 as i32);
        format!("{value:.1} {}", BYTE_UNITS[self.0])
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_read_as_english() {
        assert_eq!(plural(1, "package"), "1 package");
        assert_eq!(plural(0, "file"), "0 files");
        assert_eq!(plural(2, "entry"), "2 entries");
        assert_eq!(plural(3, "key"), "3 keys");
    }

    #[test]
    fn bytes_take_the_largest_unit_below_1024() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(signed_bytes(-3 * 1024 * 1024), "-3.0 MiB");
        let unit = ByteUnit::for_largest(&[10, 5 * 1024 * 1024]);
        assert_eq!(unit.format(512 * 1024), "0.5 MiB");
    }

    #[test]
    fn unix_seconds_read_as_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_time(-1), "1969-12-31 23:59:59");
    }
}
