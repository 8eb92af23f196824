//! Arbitrary bytes as a wheel: inspection must refuse or accept, never panic,
//! and what it accepts names only safe relative paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tstore::store::ingest::inspect_archive;
use tstore::store::wheel::safe_relative_path;

fuzz_target!(|data: &[u8]| {
    if let Ok(inspection) = inspect_archive(std::io::Cursor::new(data), "pkg-1.0-py3-none-any.whl") {
        for entry in &inspection.record {
            // RECORD may list anything; only archive names become paths, and
            // those were checked. RECORD paths are re-checked where used.
            let _ = safe_relative_path(&entry.path);
        }
    }
});
