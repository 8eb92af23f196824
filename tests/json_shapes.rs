//! Every `--json` output has one shape: an object whose `version` is the
//! schema version and whose lists are named fields, never a bare array.
//! The README's example for each command parses and has the same shape.

mod common;

use common::*;
use serde_json::Value;

const SCHEMA_VERSION: u64 = 1;

/// Parses `tstore ARGS` stdout (whatever its exit status) and checks the
/// shape every command shares; returns the object.
fn json_of(world: &World, args: &[&str]) -> serde_json::Map<String, Value> {
    let out = world.run(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "tstore {args:?}: not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    check_shape(&format!("tstore {args:?}"), value)
}

fn check_shape(what: &str, value: Value) -> serde_json::Map<String, Value> {
    let Value::Object(object) = value else {
        panic!("{what}: not an object: {value}");
    };
    assert_eq!(
        object.get("version").and_then(Value::as_u64),
        Some(SCHEMA_VERSION),
        "{what}: no schema version: {object:?}"
    );
    object
}

/// Asserts `object` has these fields, each a JSON array.
fn arrays(what: &str, object: &serde_json::Map<String, Value>, names: &[&str]) {
    for name in names {
        assert!(
            object.get(*name).is_some_and(Value::is_array),
            "{what}: `{name}` is not an array: {object:?}"
        );
    }
}

#[test]
fn every_command_prints_an_object_with_a_version_and_named_arrays() {
    let world = World::new();
    WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "X = 1\n")
        .build(&world.wheels());
    world.write_tiers(
        "no-index = true\nfind-links = [\"../wheels\"]\n\
         [tiers.t]\nrequirements = [\"alpha\"]\ncomponents = [\"app\"]\n",
    );
    // A venv made by uv, for adopt.
    let plain = world.path().join("plain");
    let uv = |args: &[&str]| {
        let out = std::process::Command::new("uv")
            .args(args)
            .env("UV_NO_CONFIG", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "uv {args:?}: {out:?}");
    };
    let plain_arg = plain.display().to_string();
    uv(&["venv", "--quiet", "--python", "3.11", &plain_arg]);
    let python = plain.join("bin/python").display().to_string();
    let wheels = world.wheels().display().to_string();
    uv(&[
        "pip",
        "install",
        "--quiet",
        "--python",
        &python,
        "--no-index",
        "--find-links",
        &wheels,
        "alpha",
    ]);

    let lock = json_of(&world, &["lock", "--json"]);
    arrays("lock", &lock, &["tiers", "differences"]);
    assert_eq!(lock["tiers"][0]["tier"], "t");
    world.ok(&["materialize", "t"]);

    let cases: &[(&[&str], &[&str])] = &[
        (&["outdated", "--json"], &["upgrades"]),
        (&["check", "t", "--json"], &["failures", "checked"]),
        (&["list", "--json"], &["tiers"]),
        (&["list", "--components", "--json"], &["components"]),
        (&["generations", "t", "--json"], &["generations"]),
        (&["verify", "--json"], &["objects", "tiers"]),
        (&["du", "--json"], &["tiers"]),
        (&["adopt", "--dry-run", "--json", &plain_arg], &["venvs"]),
        (&["gc", "--dry-run", "--json"], &[]),
        (&["which", "app", "--json"], &[]),
        (&["doctor", "--json"], &["checks"]),
    ];
    for (args, named) in cases {
        let object = json_of(&world, args);
        arrays(&format!("{args:?}"), &object, named);
    }
    let which = json_of(&world, &["which", "app", "--json"]);
    assert_eq!(which["tier"], "t");
    assert_eq!(which["materialized"], true);
    let generations = json_of(&world, &["generations", "t", "--json"]);
    assert_eq!(generations["generations"][0]["current"], true);
    let gc = json_of(&world, &["gc", "--dry-run", "--json"]);
    assert_eq!(gc["dry_run"], true);
}

#[test]
fn an_empty_answer_has_the_same_shape() {
    let world = World::new();
    world.write_tiers("[tiers.t]\nrequirements = [\"alpha\"]\n");
    // Nothing locked: outdated has nothing to compare.
    let outdated = json_of(&world, &["outdated", "--json"]);
    assert_eq!(outdated["upgrades"], serde_json::json!([]));
    let du = json_of(&world, &["du", "--json"]);
    arrays("du", &du, &["tiers"]);
}

#[test]
fn the_readme_examples_have_the_same_shape() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## JSON output\n")
        .nth(1)
        .expect("README has a `## JSON output` section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut commands = Vec::new();
    let mut rest = section;
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + "```json\n".len()..];
        let end = body.find("```").expect("closed block");
        let heading = rest[..start]
            .lines()
            .rev()
            .find(|l| l.starts_with("`tstore "))
            .expect("each example follows its command");
        let value: Value = serde_json::from_str(&body[..end])
            .unwrap_or_else(|e| panic!("README example for {heading}: {e}"));
        check_shape(heading, value);
        commands.push(heading.to_string());
        rest = &body[end..];
    }
    for expected in [
        "`tstore lock --json`",
        "`tstore outdated --json`",
        "`tstore check TIER --json`",
        "`tstore list --json`",
        "`tstore list --components --json`",
        "`tstore which NAME --json`",
        "`tstore generations TIER --json`",
        "`tstore verify --json`",
        "`tstore gc --json`",
        "`tstore du --json`",
        "`tstore adopt PATH… --json`",
        "`tstore doctor --json`",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(expected)),
            "README has no JSON example under {expected}: {commands:?}"
        );
    }
}
