//! The `tstore` command line.

mod cli;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;

/// Set once SIGINT or SIGTERM arrived (see [`clean_up_when_interrupted`]).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> std::process::ExitCode {
    clean_up_when_interrupted();
    let args = cli::Cli::parse();
    let result = cli::run(args);
    if INTERRUPTED.load(Ordering::SeqCst) {
        // The signal thread is removing the temp files and then exits with
        // the signal's status; returning now would cut it short. An error
        // here is the interruption's doing (uv got the Ctrl-C too).
        loop {
            std::thread::park();
        }
    }
    match result {
        Ok(status) => std::process::ExitCode::from(status),
        Err(err) => {
            report(&err);
            std::process::ExitCode::FAILURE
        }
    }
}

fn sqlite_code(cause: &(dyn std::error::Error + 'static)) -> Option<rusqlite::ErrorCode> {
    cause
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
}

/// Whether `cause` is the disk being full: an `io::Error` that says so by
/// kind or by errno, or SQLite's own code for it.
fn is_disk_full(cause: &(dyn std::error::Error + 'static)) -> bool {
    let io_full = cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
        io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(libc::ENOSPC)
    });
    io_full || sqlite_code(cause) == Some(rusqlite::ErrorCode::DiskFull)
}

fn index_path() -> std::path::PathBuf {
    tstore::store::Layout::of_home(&tstore::store::Store::default_home()).index_path()
}

/// The messages of `err`'s chain worth a line each: a cause whose message
/// the one before already ends with (object_store's errors print their
/// source inside their own message) is not repeated.
fn chain_lines(err: &anyhow::Error) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if lines.last().is_some_and(|before| before.ends_with(&text)) {
            continue;
        }
        lines.push(text);
    }
    lines
}

fn report(err: &anyhow::Error) {
    let lines = chain_lines(err);
    eprintln!("error: {}", lines[0]);
    for cause in &lines[1..] {
        eprintln!("  caused by: {cause}");
    }
    let disk_full = err.chain().any(is_disk_full);
    if tstore::store::health::is_index_damage(err) {
        eprintln!(
            "hint: the store index {} is damaged. Nothing more was changed; rebuild it from the \
             store's own files with `tstore verify --repair`",
            index_path().display()
        );
    }
    if disk_full {
        eprintln!(
            "hint: the disk is full (the store is at {}). Nothing half-written was kept and the \
             venvs in use are untouched; free space (`tstore gc` may help) or put TSTORE_HOME on \
             a larger disk, then run the command again",
            tstore::store::Store::default_home().display()
        );
    }
}

/// On SIGINT or SIGTERM: removes this run's temp files (a partial download
/// may be hundreds of MB), then exits with 128 + the signal's number, as a
/// shell reports a process the signal ended. Children die with tstore (see
/// `tstore::process`). The signal handler only wakes this thread, which
/// does the work outside signal context.
fn clean_up_when_interrupted() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!(
                "warning: cannot handle Ctrl-C ({err}); an interrupted run leaves its temp files \
                 to the next one"
            );
            return;
        }
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            tstore::store::tmp::remove_own();
            std::process::exit(128 + signal);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{chain_lines, is_disk_full};

    #[test]
    fn a_cause_its_error_already_printed_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("Generic S3 error: {source}")]
        struct Generic {
            source: std::io::Error,
        }
        let inner = std::io::Error::other("no endpoint answered: a: refused; b: refused");
        let err = anyhow::Error::new(Generic { source: inner }).context("cannot read the remote");
        assert_eq!(
            chain_lines(&err),
            [
                "cannot read the remote",
                "Generic S3 error: no endpoint answered: a: refused; b: refused"
            ]
        );
        // A cause that says something new stays.
        let err = anyhow::Error::new(std::io::Error::other("refused")).context("cannot connect");
        assert_eq!(chain_lines(&err), ["cannot connect", "refused"]);
    }

    #[test]
    fn a_full_disk_is_found_anywhere_on_the_chain() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let wrapped = anyhow::Error::new(io).context("cannot write object");
        assert!(wrapped.chain().any(is_disk_full));
        let by_kind = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(anyhow::Error::new(by_kind).chain().any(is_disk_full));
    }

    #[test]
    fn the_words_alone_are_not_a_full_disk() {
        let text = anyhow::anyhow!("No space left on device (os error 28)").context("upload");
        assert!(!text.chain().any(is_disk_full));
        let other = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!anyhow::Error::new(other).chain().any(is_disk_full));
    }
}
