//! Arbitrary text as a manifest: never a panic, whatever the text. Bytes
//! that are not UTF-8 go through `from_utf8_lossy`, as a file would after
//! a lossy read; the loader itself refuses non-UTF-8 files with a problem.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchboard_orchestrator::manifest::parse_manifest;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_manifest(Path::new("/etc/switchboard/operators/fuzz.toml"), &text) {
        Ok(_) => {}
        Err(problems) => assert!(!problems.is_empty(), "an error names a problem"),
    }
});
