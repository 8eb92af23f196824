//! The `tstore` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(status) => std::process::ExitCode::from(status),
        Err(err) => {
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
            if tstore::store::health::is_index_damage(&err) {
                eprintln!(
                    "hint: the store index {} is damaged. Nothing more was changed; rebuild it from \
                     the store's own files with `tstore verify --repair`",
                    index_path().display()
                );
            }
            if disk_full {
                eprintln!(
                    "hint: the disk is full (the store is at {}). Nothing half-written was kept and \
                     the venvs in use are untouched; free space (`tstore gc` may help) or put \
                     TSTORE_HOME on a larger disk, then run the command again",
                    tstore::store::Store::default_home().display()
                );
            }
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
    tstore::store::Store::default_home()
        .join("v1")
        .join("store.db")
}
