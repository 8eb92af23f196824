//! pylock.toml: parse or refuse with a located error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstore::lock::PyLock;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(err) = PyLock::parse(text, std::path::Path::new("pylock.toml")) {
        assert!(err.to_string().starts_with("pylock.toml"));
    }
});
