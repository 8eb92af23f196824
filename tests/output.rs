//! What tstore prints while it works: one line per phase with counts and
//! elapsed time when stderr is a log (piped), lines while a long phase runs,
//! and no bars on a terminal with `--no-progress` or `TSTORE_NO_PROGRESS`.

mod common;

use std::sync::atomic::Ordering;

use common::*;

/// A world whose tier `t` needs `alpha` (two modules) and `beta`, served
/// over HTTP by the returned server and locked already.
fn served_world() -> (World, FileServer) {
    let world = World::new();
    let wheels = world.wheels();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "from .core import VALUE\n")
        .file("alpha/core.py", "VALUE = 'alpha'\n")
        .build(&wheels);
    WheelBuilder::new("beta", "1.0")
        .file("beta/__init__.py", "B = 2\n")
        .build(&wheels);
    let server = FileServer::start(&wheels);
    world.write_tiers("[tiers.t]\nrequirements = [\"alpha\", \"beta\"]\n");
    lock_served(
        &world.project().join("pylock.t.toml"),
        &wheels,
        &["alpha", "beta"],
        &server.url,
    );
    (world, server)
}

/// Lines of `text` that start with `prefix`.
fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// `… in 1.2s` (or `… in 0.0s (…)`): the line ends a phase and says how long.
fn has_elapsed(line: &str) -> bool {
    line.split(" in ").nth(1).is_some_and(|after| {
        let seconds = after.split('s').next().unwrap_or("");
        seconds.parse::<f64>().is_ok()
    })
}

#[test]
fn a_piped_materialize_prints_one_line_per_phase_with_counts_and_elapsed() {
    let (world, _server) = served_world();
    let stderr = world.ok(&["materialize", "--frozen", "t"]);
    for phase in ["t: downloaded 2/2, ", "t: unpacked 2/2 ", "t: linked "] {
        let lines = lines_starting(&stderr, phase);
        assert_eq!(lines.len(), 1, "one {phase:?} line:\n{stderr}");
        assert!(has_elapsed(lines[0]), "{stderr}");
    }
    // Bytecode is compiled when the tier's Python is there to do it.
    let compiled = lines_starting(&stderr, "t: compiled bytecode ");
    assert!(compiled.len() <= 1, "{stderr}");
    assert!(compiled.iter().all(|l| has_elapsed(l)), "{stderr}");
    // The linking line counts the venv's files.
    let linked = lines_starting(&stderr, "t: linked ")[0];
    let counts = linked["t: linked ".len()..].split(' ').next().unwrap();
    let (done, total) = counts.split_once('/').expect("done/total");
    assert_eq!(done, total, "{linked}");
    assert!(done.parse::<u64>().unwrap() > 0, "{linked}");
    // No bar drawing in a log.
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b["),
        "{stderr:?}"
    );

    // A JSON answer keeps stderr free of phase lines: scripts often read
    // both together.
    let plain = world.ok(&["gc"]);
    assert_eq!(
        lines_starting(&plain, "collected garbage in ").len(),
        1,
        "{plain}"
    );
    let json = world.run(&["gc", "--json"]);
    assert!(json.status.success());
    assert_eq!(String::from_utf8_lossy(&json.stderr), "");

    // Up to date: nothing to do, no phase lines.
    let again = world.ok(&["materialize", "--frozen", "t"]);
    assert!(
        lines_starting(&again, "t: downloaded").is_empty(),
        "{again}"
    );
}

#[test]
fn a_slow_download_is_reported_while_it_runs() {
    let world = World::new();
    // Incompressible, so the wheel is as large as its content.
    let noise = incompressible_bytes(0x2545_f491_4f6c_dd1d_u64, 96 << 10);
    let wheel = WheelBuilder::new("big", "1.0")
        .raw("big/blob.bin", &noise, 0o100644)
        .build(&world.wheels());
    let server = FileServer::start(&world.wheels());
    // About 2 s for the wheel.
    server.bytes_per_second.store(48 << 10, Ordering::SeqCst);
    world.write_tiers("[tiers.t]\nrequirements = [\"big\"]\n");
    write_pylock(
        &world.project().join("pylock.t.toml"),
        &[LockedPackage::served(&wheel, &server.url)],
    );
    let out = world
        .tstore(&["fetch", "--frozen", "t"])
        .env("TSTORE_PROGRESS_INTERVAL_MS", "200")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let running = lines_starting(&stderr, "t: downloading 0/1, ");
    assert!(
        running.len() >= 2,
        "periodic lines while downloading:\n{stderr}"
    );
    assert!(
        running
            .iter()
            .all(|l| l.contains(" KiB/") && l.ends_with("s)")),
        "{stderr}"
    );
    let done = lines_starting(&stderr, "t: downloaded 1/1, ");
    assert_eq!(done.len(), 1, "{stderr}");
    // The periodic lines come before the line that ends the phase.
    let position = |line: &str| stderr.find(line).unwrap();
    assert!(
        running.iter().all(|l| position(l) < position(done[0])),
        "{stderr}"
    );
    // Unpacking waits on the download: it has nothing to report meanwhile.
    assert!(
        lines_starting(&stderr, "t: unpacking")
            .iter()
            .all(|l| position(l) > position(done[0])),
        "{stderr}"
    );
}

#[test]
fn a_terminal_gets_bars_unless_progress_is_off() {
    let (world, _server) = served_world();
    let (ok, bars) = on_terminal(&world, &[], &["fetch", "--frozen", "t"]);
    assert!(ok, "{bars:?}");
    assert!(bars.contains("downloading ["), "{bars:?}");
    // A terminal gets bars, not the log's lines.
    assert!(!bars.contains("t: downloaded"), "{bars:?}");

    for (vars, args) in [
        (
            &[("TSTORE_NO_PROGRESS", "1")][..],
            &["materialize", "--frozen", "t"][..],
        ),
        (
            &[],
            &[
                "--no-progress",
                "materialize",
                "--frozen",
                "t",
                "--into",
                "../d",
            ],
        ),
    ] {
        let (ok, text) = on_terminal(&world, vars, args);
        assert!(ok, "{text:?}");
        assert!(!text.contains(" ["), "no bar: {text:?}");
        assert!(text.contains("t: linked "), "the phase lines: {text:?}");
    }
}
