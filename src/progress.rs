//! How the library reports progress and notices. Only the binary knows how
//! they are drawn (indicatif); tests and quiet runs use [`Silent`].

/// Receives progress from long operations. All methods have no-op defaults.
pub trait Progress: Sync {
    /// The phases that follow are for tier `name` (a log line names it).
    fn tier(&self, _name: &str) {}
    /// A phase starts with `items` units of work and `bytes` to move (0:
    /// unknown). Several phases may be open at once (unpacking overlaps
    /// downloading); a phase whose `items` are all done ends by itself.
    fn start(&self, _phase: &str, _items: u64, _bytes: u64) {}
    /// `bytes` more were moved (in the open phase that counts bytes).
    fn bytes(&self, _bytes: u64) {}
    /// One unit of work of the phase started last finished.
    fn item_done(&self, _name: &str) {}
    /// One unit of work of the open phase `phase` finished.
    fn item_done_in(&self, _phase: &str, _name: &str) {}
    /// Every open phase ended.
    fn finish(&self) {}
    /// Something the user should read once (a fallback, an install).
    fn notice(&self, _message: &str) {}
    /// Detail shown with `-v`.
    fn detail(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// Runs `step` and reports how long it took as a `-v` detail, so a slow
/// materialize can be read phase by phase.
pub fn timed<T>(progress: &dyn Progress, step: &str, run: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = run();
    progress.detail(&format!(
        "{step}: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    ));
    out
}

/// A byte count as people read it: `512 B`, `1.5 KiB`, `5.6 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
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
    use super::human_bytes;

    #[test]
    fn bytes_read_in_the_largest_whole_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(6 * 1024 * 1024 * 1024), "6.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }
}
