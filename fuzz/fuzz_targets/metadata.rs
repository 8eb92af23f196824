//! METADATA and WHEEL headers: parse or refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstore::store::wheel::{check_wheel_file, parse_metadata};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((name, version)) = parse_metadata(text) {
        assert!(!name.contains('\n') && !version.contains('\n'));
    }
    let _ = check_wheel_file(text);
});
