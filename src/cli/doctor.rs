//! `tstore doctor`: prints the library's checks, one line each, with the fix
//! under every one that failed.

use std::path::Path;

use tstore::config::Config;
use tstore::store::Store;
use tstore::upkeep::doctor::{self, DoctorReport};

use super::report::Reporter;

/// Runs the checks; exit status 1 when one blocks materialize. Runs without
/// a session, as the store it would open may be what is broken.
pub fn doctor(config: Option<&Path>, reporter: &Reporter, json: bool) -> anyhow::Result<u8> {
    let config = Config::discover(config)?;
    let report = doctor::doctor(&config, &Store::default_home(), reporter);
    if json {
        super::report::print_json(serde_json::json!({
            "locations": report.locations,
            "checks": report.checks,
            "blocks_materialize": report.blocks_materialize(),
        }))?;
    } else {
        print_report(&report);
    }
    Ok(u8::from(report.blocks_materialize()))
}

fn print_report(report: &DoctorReport) {
    let at = &report.locations;
    println!("store      {}", at.store.display());
    println!("config     {}", at.config);
    println!("locks      {}", at.locks.display());
    for folder in &at.venv_folders {
        println!("venvs in   {}", folder.display());
    }
    println!();
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let mark = match (check.ok, check.blocking) {
            (true, _) => "ok  ",
            (false, false) => "warn",
            (false, true) => "FAIL",
        };
        println!("{mark}  {:<width$}  {}", check.name, check.detail);
        if let Some(fix) = check.fix.as_ref().filter(|_| !check.ok) {
            println!("      {:<width$}  fix: {fix}", "");
        }
    }
    println!();
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if report.blocks_materialize() {
        println!("materialize would fail: fix the FAIL lines first");
    } else if failed > 0 {
        println!("materialize works; {failed} warning(s) cost disk or time");
    } else {
        println!("all {} checks passed", report.checks.len());
    }
}
