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

fn index_path() -> std::path::PathBuf {
    tstore::store::Layout::of_home(&tstore::store::Store::default_home()).index_path()
}

fn report(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    let disk_full = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
            || cause.to_string().contains("No space left on device")
            || sqlite_code(cause) == Some(rusqlite::ErrorCode::DiskFull)
    });
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
