//! Small JSON helpers shared by the modules (crate-private).

use serde_json::Value;

/// The JSON type name of a value, as used in error messages and in JSON
/// Schema (`null`, `boolean`, `number`, `string`, `array`, `object`).
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Longest piece of outside input quoted back in an error message.
const EXCERPT_BYTES: usize = 64;

/// Shortens outside input before it is stored in an error, so that a 1 MiB
/// bogus field does not turn into a 1 MiB log line.
pub(crate) fn excerpt(s: &str) -> String {
    if s.len() <= EXCERPT_BYTES {
        return s.to_owned();
    }
    let mut end = EXCERPT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 3);
    out.push_str(&s[..end]);
    out.push('…');
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any byte of `word` is below 0x20, `"` or `\`: the bytes JSON
/// escapes. The classic zero-byte tests (exact as a yes/no answer).
pub(crate) fn needs_escape(word: u64) -> bool {
    escape_mask(word) != 0
}

/// The bytes of `word` (little-endian) that are below 0x20, `"` or `\\`:
/// not zero when there is one, and the lowest set bit is the high bit of
/// the first such byte (bits above it may be spurious, from borrows).
pub(crate) fn escape_mask(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let has_quote = quote.wrapping_sub(ONES) & !quote & HIGH;
    let has_backslash = backslash.wrapping_sub(ONES) & !backslash & HIGH;
    below_space | has_quote | has_backslash
}

/// Appends `s` as a JSON string literal (with quotes) to `out`.
///
/// Escapes exactly what `serde_json` escapes (quote, backslash, control
/// characters, using the short forms where JSON has them), so the bytes are
/// identical to `serde_json::to_vec(s)`. Unescaped runs are copied in one go.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Skip the clean prefix 8 bytes at a time: a branch-free test of a
    // whole word (SWAR), far cheaper per byte than the escape loop below.
    let mut clean = 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        if needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        clean += 8;
    }
    // The last few bytes (or a short string: header names, ids) as one
    // word padded with a letter, so a clean string never goes through the
    // byte loop.
    let tail = words.remainder();
    if clean + tail.len() == bytes.len() {
        let mut word = [b'a'; 8];
        word[..tail.len()].copy_from_slice(tail);
        if !needs_escape(u64::from_le_bytes(word)) {
            out.extend_from_slice(bytes);
            out.push(b'"');
            return;
        }
    }
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[run_start..i]);
        run_start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0x0f)],
            ]),
        }
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_str_matches_serde_json() {
        for s in [
            "",
            "plain",
            "quote \" and \\ backslash",
            "ctl \u{0} \u{1f} \n\r\t\u{8}\u{c} \u{7f}",
            "unicode é ✓ 🦀",
            "a long clean run of text before the \" quote, and after it more text",
            "0123456789abcdef\u{1f}0123456789abcdef\\0123456789",
            "éééééééééééééééé\n",
        ] {
            let mut ours = Vec::new();
            write_str(&mut ours, s);
            let theirs = serde_json::to_vec(s).expect("a &str always serializes");
            assert_eq!(ours, theirs, "for {s:?}");
        }
    }

    #[test]
    fn needs_escape_is_exact() {
        for b in 0u8..=255 {
            let mut word = [b'a'; 8];
            word[usize::from(b % 8)] = b;
            let expect = b < 0x20 || b == b'"' || b == b'\\';
            assert_eq!(
                needs_escape(u64::from_le_bytes(word)),
                expect,
                "byte {b:#x}"
            );
        }
    }

    #[test]
    fn escape_mask_finds_the_first_byte() {
        for first in 0..8 {
            for b in [b'"', b'\\', 0x00, 0x1f] {
                let mut word = [b'a'; 8];
                word[first] = b;
                // Later bytes that also need escaping do not hide it.
                for later in word.iter_mut().skip(first + 1) {
                    *later = 0x01;
                }
                let mask = escape_mask(u64::from_le_bytes(word));
                assert_eq!(mask.trailing_zeros() / 8, first as u32, "{word:?}");
            }
        }
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= EXCERPT_BYTES + '…'.len_utf8());
        assert_eq!(excerpt("short"), "short");
    }
}
