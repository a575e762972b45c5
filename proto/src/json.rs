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

/// Strings up to this long are checked a word (8 bytes) at a time,
/// inline: keys, ids, sources and the timestamp. Longer ones go on in
/// blocks of [`BLOCK`] bytes in a function of their own (a call in the
/// short path cost every string a stack frame: +10-20 instructions).
pub(crate) const SHORT: usize = 32;

/// Bytes per block of the long-string loops: 32 bytes are two SSE2
/// registers (every x86-64 has SSE2); blocks of 16 measured 50% more
/// instructions per byte.
pub(crate) const BLOCK: usize = 32;

/// Whether any byte of `block` is below 0x20, `"` or `\`. Branch-free
/// over a fixed-size array, so the compiler turns it into vector compares:
/// SIMD without `unsafe` or a dependency (a clean 1 KiB string: ~840
/// instructions, against ~2,600 a word at a time).
#[inline(always)]
pub(crate) fn block_needs_escape(block: &[u8; BLOCK]) -> bool {
    block.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Whether `block` is ASCII with nothing JSON escapes: what the receive
/// scanner skips a block at a time (the same vector compares as
/// [`block_needs_escape`], plus the high bits).
#[inline(always)]
pub(crate) fn block_is_plain_ascii(block: &[u8; BLOCK]) -> bool {
    block.iter().fold(0u8, |acc, &b| {
        acc | u8::from((b < 0x20) | (b == b'"') | (b == b'\\')) | (b & 0x80)
    }) == 0
}

/// The 8 bytes of `bytes` at `at` as a little-endian word.
#[inline(always)]
pub(crate) fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?))
}

/// How many leading bytes of `bytes` JSON writes as they are (none below
/// 0x20, no `"`, no `\`).
#[inline]
pub(crate) fn clean_prefix(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(word) = word_at(bytes, at) {
        let mask = escape_mask(word);
        if mask != 0 {
            return at + (mask.trailing_zeros() / 8) as usize;
        }
        at += 8;
        if at == SHORT {
            return clean_prefix_long(bytes, at);
        }
    }
    clean_tail(bytes, at)
}

/// [`clean_prefix`] of a string whose first `at` bytes are clean: whole
/// blocks, then words.
#[inline(never)]
fn clean_prefix_long(bytes: &[u8], mut at: usize) -> usize {
    while let Some(block) = bytes.get(at..at + BLOCK) {
        let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
            break;
        };
        if block_needs_escape(block) {
            break;
        }
        at += BLOCK;
    }
    while let Some(word) = word_at(bytes, at) {
        let mask = escape_mask(word);
        if mask != 0 {
            return at + (mask.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    clean_tail(bytes, at)
}

/// The end of [`clean_prefix`]: fewer than 8 bytes from `at` are left.
/// They are tested as one word: the string's last 8 bytes when it has 8
/// (the ones before `at` are known clean, so the first byte found is
/// still the first), else the rest padded with a letter.
#[inline(always)]
fn clean_tail(bytes: &[u8], at: usize) -> usize {
    if at >= bytes.len() {
        return bytes.len();
    }
    let (start, word) = match bytes.len().checked_sub(8) {
        Some(start) => (start, word_at(bytes, start).unwrap_or(0)),
        None => {
            let mut word = [b'a'; 8];
            if let Some(head) = word.get_mut(..bytes.len()) {
                head.copy_from_slice(bytes);
            }
            (0, u64::from_le_bytes(word))
        }
    };
    let mask = escape_mask(word);
    if mask == 0 {
        bytes.len()
    } else {
        start + (mask.trailing_zeros() / 8) as usize
    }
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
    let clean = clean_prefix(bytes);
    if clean == bytes.len() {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
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
            "a clean run longer than one block of thirty-two bytes, then \\ and \"",
            "a clean run longer than one block of thirty-two bytes, then a control \u{1}",
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
                escape_mask(u64::from_le_bytes(word)) != 0,
                expect,
                "byte {b:#x}"
            );
        }
    }

    #[test]
    fn clean_prefix_stops_at_the_first_byte_to_escape() {
        for len in 0..(SHORT + 3 * BLOCK + 9) {
            let clean: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert_eq!(clean_prefix(&clean), len);
            for at in 0..len {
                for b in [b'"', b'\\', 0x00, 0x1f] {
                    let mut v = clean.clone();
                    v[at] = b;
                    // A later byte to escape does not hide the first.
                    if let Some(later) = v.get_mut(at + 1) {
                        *later = b'"';
                    }
                    assert_eq!(clean_prefix(&v), at, "len {len}, byte {b:#x} at {at}");
                }
            }
        }
        for b in 0u8..=255 {
            let mut block = [b'a'; BLOCK];
            block[usize::from(b) % BLOCK] = b;
            let expect = b < 0x20 || b == b'"' || b == b'\\';
            assert_eq!(block_needs_escape(&block), expect, "byte {b:#x}");
            assert_eq!(
                block_is_plain_ascii(&block),
                !expect && b < 0x80,
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
