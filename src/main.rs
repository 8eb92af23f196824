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
            });
            if disk_full {
                eprintln!(
                    "hint: the disk is full. Nothing half-written was kept and the venvs in use are \
                     untouched; free space (`tstore gc` may help) or put TSTORE_HOME on a larger disk, \
                     then run the command again"
                );
            }
            std::process::ExitCode::FAILURE
        }
    }
}
