//! Progress (bars on a terminal, lines in a log) and notices on stderr, and
//! how figures read in the summaries (bytes, plurals, dates).
//!
//! On a terminal each open phase has its own bar (downloading, unpacking,
//! compiling bytecode, linking) with counts and rates. Elsewhere, as in a CI
//! log, each phase ends with one line (`t: downloaded 74/74, 115.7 MiB in
//! 12.3s (9.4 MiB/s)`) and a long phase says where it is every 10 s.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tstore::materialize::LinkMethod;
use tstore::progress::Progress;
pub use tstore::progress::human_bytes;

/// How often a log hears from a phase that is still running.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Test hook: the log interval in milliseconds instead of 10 s, so a test
/// sees the periodic lines without waiting.
const INTERVAL_VARIABLE: &str = "TSTORE_PROGRESS_INTERVAL_MS";

pub struct Reporter {
    quiet: bool,
    verbose: u8,
    /// Bars on a terminal; otherwise lines.
    bars: bool,
    /// A line when a phase ends (not on a terminal's bars, nor with
    /// `--json`: scripts often read stderr with the JSON).
    lines: bool,
    /// Lines while a phase runs (not with `--no-progress`).
    periodic: bool,
    interval: Duration,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    tier: Option<String>,
    /// Phases in the order they started; ended ones stay so late events
    /// for them are ignored rather than counted elsewhere.
    phases: Vec<Phase>,
    multi: Option<MultiProgress>,
    ticking: bool,
}

/// One phase's figures, as the lines read them.
#[derive(Debug, Clone)]
struct Phase {
    name: String,
    tier: Option<String>,
    items: u64,
    done: u64,
    total_bytes: u64,
    bytes: u64,
    started: Instant,
    last_line: Instant,
    ended: bool,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// `json`: the command answers in JSON, so the log gets no phase lines.
    pub fn new(output: super::settings::Output, json: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let interval = std::env::var(INTERVAL_VARIABLE)
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(LOG_INTERVAL, Duration::from_millis);
        let bars = output.progress && terminal;
        Self {
            quiet: output.quiet,
            verbose: output.verbose,
            bars,
            lines: !json && !bars,
            periodic: !json && output.progress && !terminal,
            interval,
            state: Arc::default(),
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
        let state = self.state.lock().unwrap();
        print_with(&state, line);
    }

    /// Prints every 10 s (or the test interval) where each open phase is.
    fn start_ticking(&self, state: &mut State) {
        if state.ticking || !self.periodic {
            return;
        }
        state.ticking = true;
        let (shared, interval) = (Arc::clone(&self.state), self.interval);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep((interval / 4).max(Duration::from_millis(20)));
                let mut state = shared.lock().unwrap();
                let now = Instant::now();
                let open = state.phases.iter().filter(|p| !p.ended).count();
                for phase in state.phases.iter_mut().filter(|p| !p.ended) {
                    // A phase waiting on another (unpacking on downloads)
                    // has nothing to say yet.
                    let idle = phase.done == 0 && phase.bytes == 0 && open > 1;
                    if !idle && now.duration_since(phase.last_line) >= interval {
                        phase.last_line = now;
                        eprintln!("{}", running_line(phase, now));
                    }
                }
            }
        });
    }

    fn end(&self, state: &mut State, index: usize) {
        let phase = &mut state.phases[index];
        if phase.ended {
            return;
        }
        phase.ended = true;
        if let Some(bar) = phase.bar.take() {
            bar.finish_and_clear();
            if let Some(multi) = &state.multi {
                multi.remove(&bar);
            }
        } else if self.lines {
            eprintln!("{}", ended_line(phase, Instant::now()));
        }
    }

    /// Forgets the phases once all have ended.
    fn tidy(state: &mut State) {
        if state.phases.iter().all(|p| p.ended) {
            state.phases.clear();
            state.multi = None;
        }
    }

    fn count(&self, state: &mut State, index: usize) {
        let phase = &mut state.phases[index];
        if phase.ended {
            return;
        }
        phase.done += 1;
        if let Some(bar) = &phase.bar {
            if phase.total_bytes > 0 {
                bar.set_message(format!("{}/{}", phase.done, phase.items));
            } else {
                bar.inc(1);
            }
        }
        if phase.items > 0 && phase.done >= phase.items {
            self.end(state, index);
            Self::tidy(state);
        }
    }
}

fn print_with(state: &State, line: &str) {
    match &state.multi {
        Some(multi) => multi.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

fn new_bar(items: u64, bytes: u64) -> ProgressBar {
    let (bar, template) = if bytes > 0 {
        (
            ProgressBar::new(bytes),
            "{prefix:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
    } else if items > 0 {
        (
            ProgressBar::new(items),
            "{prefix:>18} [{bar:30}] {pos}/{len} {per_sec}",
        )
    } else {
        (ProgressBar::new_spinner(), "{spinner} {prefix} {elapsed}")
    };
    let style = ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ");
    let bar = bar.with_style(style);
    if bytes > 0 {
        bar.set_message(format!("0/{items}"));
    }
    bar
}

impl Progress for Reporter {
    fn tier(&self, name: &str) {
        self.state.lock().unwrap().tier = Some(name.to_string());
    }

    fn start(&self, phase: &str, items: u64, bytes: u64) {
        if self.quiet {
            return;
        }
        let mut state = self.state.lock().unwrap();
        let bar = self.bars.then(|| {
            let multi = state.multi.get_or_insert_with(|| {
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
            });
            let bar = new_bar(items, bytes);
            bar.set_prefix(phase.to_string());
            let bar = multi.add(bar);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let now = Instant::now();
        let tier = state.tier.clone();
        state.phases.push(Phase {
            name: phase.to_string(),
            tier,
            items,
            done: 0,
            total_bytes: bytes,
            bytes: 0,
            started: now,
            last_line: now,
            ended: false,
            bar,
        });
        self.start_ticking(&mut state);
    }

    fn bytes(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap();
        if let Some(phase) = state
            .phases
            .iter_mut()
            .rev()
            .find(|p| !p.ended && p.total_bytes > 0)
        {
            phase.bytes += bytes;
            if let Some(bar) = &phase.bar {
                bar.inc(bytes);
            }
        }
    }

    fn item_done(&self, _name: &str) {
        let mut state = self.state.lock().unwrap();
        if let Some(last) = state.phases.len().checked_sub(1) {
            self.count(&mut state, last);
        }
    }

    fn item_done_in(&self, phase: &str, _name: &str) {
        let mut state = self.state.lock().unwrap();
        if let Some(index) = state
            .phases
            .iter()
            .rposition(|p| !p.ended && p.name == phase)
        {
            self.count(&mut state, index);
        }
    }

    fn finish(&self) {
        let mut state = self.state.lock().unwrap();
        for index in 0..state.phases.len() {
            self.end(&mut state, index);
        }
        Self::tidy(&mut state);
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

/// `tier: ` when the phase is for one.
fn tier_prefix(phase: &Phase) -> String {
    phase
        .tier
        .as_deref()
        .map_or_else(String::new, |tier| format!("{tier}: "))
}

/// What a log shows while a phase runs: `t: downloading 65/74, 115.0
/// MiB/115.7 MiB (8s)`.
fn running_line(phase: &Phase, now: Instant) -> String {
    let mut line = format!("{}{}", tier_prefix(phase), phase.name);
    if phase.items > 0 {
        line.push_str(&format!(" {}/{}", phase.done, phase.items));
    }
    if phase.total_bytes > 0 {
        line.push_str(&format!(
            ", {}/{}",
            human_bytes(phase.bytes),
            human_bytes(phase.total_bytes)
        ));
    }
    let seconds = now.duration_since(phase.started).as_secs_f64();
    line.push_str(&format!(" ({seconds:.0}s)"));
    line
}

/// What a log shows when a phase ends: `t: downloaded 74/74, 115.7 MiB in
/// 12.3s (9.4 MiB/s)`.
fn ended_line(phase: &Phase, now: Instant) -> String {
    let (verb, rest) = phase
        .name
        .split_once(' ')
        .map_or((phase.name.as_str(), ""), |(verb, rest)| (verb, rest));
    let mut line = format!("{}{}", tier_prefix(phase), past_tense(verb));
    if !rest.is_empty() {
        line.push(' ');
        line.push_str(rest);
    }
    if phase.items > 0 {
        line.push_str(&format!(" {}/{}", phase.done, phase.items));
    }
    if phase.bytes > 0 {
        line.push_str(&format!(", {}", human_bytes(phase.bytes)));
    }
    let seconds = now.duration_since(phase.started).as_secs_f64();
    line.push_str(&format!(" in {seconds:.1}s"));
    if seconds >= 0.05 {
        if phase.bytes > 0 {
            let rate = (phase.bytes as f64 / seconds) as u64;
            line.push_str(&format!(" ({}/s)", human_bytes(rate)));
        } else if phase.done > 0 {
            let rate = phase.done as f64 / seconds;
            let digits = usize::from(rate < 10.0);
            line.push_str(&format!(" ({rate:.digits$}/s)"));
        }
    }
    line
}

/// `downloading` → `downloaded`, `building` → `built`; a word that is not
/// a present participle stays as it is.
fn past_tense(verb: &str) -> String {
    let Some(stem) = verb.strip_suffix("ing") else {
        return verb.to_string();
    };
    if let Some(head) = stem.strip_suffix("build") {
        return format!("{head}built");
    }
    if let Some(head) = stem.strip_suffix('y') {
        return format!("{head}ied");
    }
    if stem.ends_with('e') {
        return format!("{stem}d");
    }
    format!("{stem}ed")
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

    fn phase(name: &str, tier: Option<&str>, items: u64, total_bytes: u64) -> Phase {
        let now = Instant::now();
        Phase {
            name: name.to_string(),
            tier: tier.map(str::to_string),
            items,
            done: 0,
            total_bytes,
            bytes: 0,
            started: now,
            last_line: now,
            ended: false,
            bar: None,
        }
    }

    #[test]
    fn a_log_line_ends_each_phase_with_counts_time_and_rate() {
        let mib = 1024 * 1024;
        let mut download = phase("downloading", Some("tekton-ai"), 74, 116 * mib);
        download.done = 74;
        download.bytes = 121_318_195;
        let after = |seconds: f64| download.started + Duration::from_secs_f64(seconds);
        assert_eq!(
            ended_line(&download, after(12.3)),
            "tekton-ai: downloaded 74/74, 115.7 MiB in 12.3s (9.4 MiB/s)"
        );
        download.done = 65;
        download.bytes = 115 * mib;
        assert_eq!(
            running_line(&download, after(8.4)),
            "tekton-ai: downloading 65/74, 115.0 MiB/116.0 MiB (8s)"
        );

        let mut link = phase("linking", Some("t"), 16, 0);
        link.done = 16;
        let after = |seconds: f64| link.started + Duration::from_secs_f64(seconds);
        assert_eq!(
            ended_line(&link, after(0.1)),
            "t: linked 16/16 in 0.1s (160/s)"
        );
        assert_eq!(
            ended_line(&link, after(4.0)),
            "t: linked 16/16 in 4.0s (4.0/s)"
        );
        // Too short for a rate to mean anything.
        assert_eq!(ended_line(&link, after(0.01)), "t: linked 16/16 in 0.0s");

        // No tier, no count: a spinner's phase.
        let gc = phase("collecting garbage", None, 0, 0);
        let after = gc.started + Duration::from_millis(1500);
        assert_eq!(ended_line(&gc, after), "collected garbage in 1.5s");
        assert_eq!(running_line(&gc, after), "collecting garbage (2s)");
    }

    #[test]
    fn overlapping_phases_end_in_any_order() {
        let reporter = Reporter::new(
            crate::cli::settings::Output {
                quiet: false,
                verbose: 0,
                progress: true,
            },
            false,
        );
        // A failed download: unpacking is done with its one item, the
        // download never is.
        reporter.start("downloading", 1, 10);
        reporter.start("unpacking", 1, 0);
        reporter.bytes(4);
        reporter.item_done_in("unpacking", "a");
        reporter.finish();
        // Then a phase of its own.
        reporter.start("linking", 2, 0);
        reporter.item_done("x");
        reporter.item_done("y");
        reporter.finish();
        assert!(reporter.state.lock().unwrap().phases.is_empty());
    }

    #[test]
    fn phases_end_in_the_past_tense() {
        for (now, past) in [
            ("downloading", "downloaded"),
            ("unpacking", "unpacked"),
            ("compiling", "compiled"),
            ("linking", "linked"),
            ("verifying", "verified"),
            ("rebuilding", "rebuilt"),
            ("building", "built"),
            ("materializing", "materialized"),
            ("fetch", "fetch"),
        ] {
            assert_eq!(past_tense(now), past);
        }
    }

    #[test]
    fn unix_seconds_read_as_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_time(-1), "1969-12-31 23:59:59");
    }
}
