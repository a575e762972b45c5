//! Arbitrary text as a manifest: never a panic, whatever the text. Bytes
//! that are not UTF-8 go through `from_utf8_lossy`, as a file would after
//! a lossy read; the loader itself refuses non-UTF-8 files with a problem.
//! A refusal names at least one problem, each with a message and, where it
//! has a place, a line and column inside the text.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchboard_orchestrator::manifest::parse_manifest;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/switchboard/operators/fuzz.toml");
    if let Err(problems) = parse_manifest(path, &text) {
        assert!(!problems.is_empty(), "a refusal names a problem");
        let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
        for p in problems {
            assert!(!p.message.is_empty());
            assert_eq!(p.path, path);
            if let Some(line) = p.line {
                assert!((1..=lines).contains(&line), "line {line} of {lines}");
                assert!(p.column.is_some_and(|c| c >= 1));
            }
        }
    }
});
