//! `tstore du --svg FILE`: one well-formed SVG chart naming every tier and
//! the saving; a file that cannot be written is a clear error.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

struct Setup {
    world: World,
    root: std::path::PathBuf,
    _server: FileServer,
}

/// Tiers core (alpha, gamma) and ml (alpha), materialized under `root`.
fn setup(root: &Path) -> Setup {
    let world = World::new();
    let wheels = world.wheels();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", &"A = 1\n".repeat(2000))
        .build(&wheels);
    WheelBuilder::new("gamma", "1.0")
        .file("gamma/__init__.py", &"G = 1\n".repeat(4000))
        .build(&wheels);
    let server = FileServer::start(&wheels);
    project_at(
        root,
        "[tiers.core]\nrequirements = [\"alpha\", \"gamma\"]\n[tiers.ml]\nrequirements = [\"alpha\"]\n",
    );
    for (tier, packages) in [("core", &["alpha", "gamma"][..]), ("ml", &["alpha"][..])] {
        let lock = root.join(format!("project/pylock.{tier}.toml"));
        lock_served(&lock, &wheels, packages, &server.url);
    }
    let setup = Setup {
        world,
        root: root.to_path_buf(),
        _server: server,
    };
    let out = setup.run(&["materialize", "--frozen", "core", "ml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    setup
}

impl Setup {
    fn run(&self, args: &[&str]) -> Output {
        self.world
            .run_in(&self.root.join("project"), &self.root.join("store"), args)
    }
}

/// Parses `svg` with Python's XML parser and returns every text in it, one a line.
fn texts_of_parsed(svg: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             root = E.parse(sys.argv[1]).getroot()\n\
             assert root.tag == '{http://www.w3.org/2000/svg}svg', root.tag\n\
             print('\\n'.join(''.join(e.itertext()) for e in root.iter('{http://www.w3.org/2000/svg}text')))",
        ])
        .arg(svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "not well-formed SVG: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn du_svg_writes_a_well_formed_chart_naming_each_tier_and_the_saving() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let chart = dir.path().join("du.svg");
    let out = s.run(&["du", "--svg", chart.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The table is still printed.
    assert!(String::from_utf8_lossy(&out.stdout).contains("as plain copies:"));
    let texts = texts_of_parsed(&chart);
    for tier in ["core", "ml"] {
        assert!(texts.lines().any(|line| line == tier), "{tier} in {texts}");
    }
    assert!(texts.contains("saving: "), "{texts}");
    assert!(texts.contains("as plain copies"), "{texts}");

    // With --json too, and for one tier only.
    let one = dir.path().join("one.svg");
    let out = s.run(&["du", "--json", "--svg", one.to_str().unwrap(), "ml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    let texts = texts_of_parsed(&one);
    assert!(texts.lines().any(|line| line == "ml"), "{texts}");
    assert!(!texts.lines().any(|line| line == "core"), "{texts}");
}

#[test]
fn du_svg_to_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let bad = dir.path().join("no-such-dir/du.svg");
    let out = s.run(&["du", "--svg", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write the du chart to"), "{stderr}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(!bad.exists());
}
