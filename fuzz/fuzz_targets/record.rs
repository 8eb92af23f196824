//! RECORD files: parse or refuse, and every parsed path survives CSV quoting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstore::store::wheel::{csv_field, parse_record};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(entries) = parse_record(text) {
        for entry in entries {
            if entry.path.contains(['\n', '\r']) {
                continue; // a line-based format cannot round-trip line breaks
            }
            let line = format!("{},,\n", csv_field(&entry.path));
            let again = parse_record(&line).expect("a quoted path parses");
            assert_eq!(again[0].path, entry.path);
        }
    }
});
