//! entry_points.txt: parse or refuse; launchers for what parses never panic
//! and only name dotted identifiers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstore::materialize::scripts::launcher;
use tstore::store::wheel::parse_entry_points;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(entries) = parse_entry_points(text) {
        for entry in entries {
            assert!(!entry.module.is_empty());
            assert!(!entry.module.contains(['\n', '"', '\'', ';']));
            let _ = launcher(&entry, std::path::Path::new("/venv/bin/python"));
        }
    }
});
