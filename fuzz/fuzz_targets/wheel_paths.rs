//! Entry names: whatever is accepted stays inside the directory it is joined to.
#![no_main]

use std::path::Component;

use libfuzzer_sys::fuzz_target;
use tstore::store::wheel::safe_relative_path;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    if let Ok(path) = safe_relative_path(name) {
        assert!(!path.as_os_str().is_empty());
        assert!(path.is_relative(), "{name:?} became {path:?}");
        assert!(
            path.components().all(|c| matches!(c, Component::Normal(_))),
            "{name:?} became {path:?}"
        );
    }
});
