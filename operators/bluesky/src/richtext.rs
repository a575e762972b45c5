//! Post text: its length in graphemes (the lexicon's limit is 300, and
//! 3000 bytes), splitting a long text into thread-sized parts, and
//! finding the mentions and links that become facets
//! (`app.bsky.richtext.facet`) with UTF-8 *byte* offsets, as the lexicon
//! requires (not chars, not UTF-16 units).
//!
//! Detection follows the reference client's rules, narrowed: a mention is
//! `@` + a valid handle (at least two dot-separated labels) after the
//! start, a space or `(`; a link is `http://` or `https://` up to the next
//! space, without trailing punctuation (and without a closing `)` that
//! has no opening one in the link). Bare domains are not linked.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{json, Value};
use unicode_segmentation::UnicodeSegmentation;

/// Most graphemes in a post.
pub const MAX_GRAPHEMES: usize = 300;
/// Most bytes in a post's text.
pub const MAX_BYTES: usize = 3000;

/// A mention or link found in a text, by byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// `@handle` at `start..end` (the `@` included).
    Mention {
        /// Byte offset of the `@`.
        start: usize,
        /// Byte offset after the handle.
        end: usize,
        /// The handle, lower-cased.
        handle: String,
    },
    /// A URL at `start..end`.
    Link {
        /// Byte offset of the URL.
        start: usize,
        /// Byte offset after it.
        end: usize,
        /// The URL.
        uri: String,
    },
}

static MENTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s(])(@[a-zA-Z0-9.-]+)").unwrap_or_else(|e| panic!("mention regex: {e}"))
});
static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s(])(https?://\S+)").unwrap_or_else(|e| panic!("link regex: {e}"))
});

/// Whether `handle` is a syntactically valid handle (atproto spec).
pub fn valid_handle(handle: &str) -> bool {
    let labels: Vec<&str> = handle.split('.').collect();
    handle.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// The mentions and links in `text`, in order.
pub fn spans(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    for cap in MENTION.captures_iter(text) {
        let Some(m) = cap.get(1) else { continue };
        let handle = m.as_str()[1..].trim_end_matches(['.', '-']);
        if valid_handle(handle) {
            out.push(Span::Mention {
                start: m.start(),
                end: m.start() + 1 + handle.len(),
                handle: handle.to_ascii_lowercase(),
            });
        }
    }
    for cap in LINK.captures_iter(text) {
        let Some(m) = cap.get(1) else { continue };
        let mut uri = m
            .as_str()
            .trim_end_matches(['.', ',', ';', ':', '!', '?', '"', '\'']);
        if uri.ends_with(')') && !uri.contains('(') {
            uri = uri.trim_end_matches(')');
        }
        if uri.len() > "https://".len() {
            out.push(Span::Link {
                start: m.start(),
                end: m.start() + uri.len(),
                uri: uri.to_string(),
            });
        }
    }
    out.sort_by_key(|s| match s {
        Span::Mention { start, .. } | Span::Link { start, .. } => *start,
    });
    out
}

/// A facet for a mention of `did` or a link, over `start..end`.
pub fn facet(span: &Span, did: Option<&str>) -> Option<Value> {
    match span {
        Span::Mention { start, end, .. } => Some(json!({
            "index": {"byteStart": start, "byteEnd": end},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did?}],
        })),
        Span::Link { start, end, uri } => Some(json!({
            "index": {"byteStart": start, "byteEnd": end},
            "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}],
        })),
    }
}

/// Graphemes in `text`.
pub fn graphemes(text: &str) -> usize {
    text.graphemes(true).count()
}

/// Whether `text` fits one post.
pub fn fits(text: &str) -> bool {
    text.len() <= MAX_BYTES && graphemes(text) <= MAX_GRAPHEMES
}

/// `text` cut into parts that each fit a post, at the last whitespace
/// before the limit when there is one (so mentions and links stay whole),
/// else at a grapheme boundary. Parts are trimmed; empty ones dropped.
pub fn split(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if fits(rest) {
            parts.push(rest.to_string());
            break;
        }
        // The byte offset after the longest prefix that fits.
        let mut limit = 0;
        for (count, (i, g)) in rest.grapheme_indices(true).enumerate() {
            if count >= MAX_GRAPHEMES || i + g.len() > MAX_BYTES {
                break;
            }
            limit = i + g.len();
        }
        let head = &rest[..limit];
        let cut = head
            .grapheme_indices(true)
            .filter(|(_, g)| g.chars().all(char::is_whitespace))
            .map(|(i, _)| i)
            .next_back()
            .filter(|&i| i > 0)
            .unwrap_or(limit);
        parts.push(rest[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mentions_and_links_by_byte_offset() {
        let text = "héllo 👋🏽 @Alice.test, see https://example.com/a?b=c. (https://x.org/p)";
        let s = spans(text);
        assert_eq!(s.len(), 3, "{s:?}");
        let Span::Mention { start, end, handle } = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(&text[*start..*end], "@Alice.test");
        assert_eq!(handle, "alice.test");
        // "héllo " is 7 bytes, the waving hand with skin tone 8, a space.
        assert_eq!(*start, 16);
        let Span::Link { start, end, uri } = &s[1] else {
            panic!("{s:?}")
        };
        assert_eq!(&text[*start..*end], "https://example.com/a?b=c");
        assert_eq!(uri, "https://example.com/a?b=c");
        let Span::Link { uri, .. } = &s[2] else {
            panic!("{s:?}")
        };
        assert_eq!(uri, "https://x.org/p");
    }

    #[test]
    fn not_mentions() {
        assert!(spans("mail me@alice.test").is_empty());
        assert!(spans("@nodot and @-bad.test").is_empty());
        assert!(spans("@alice.123").is_empty());
        assert_eq!(spans("(@bob.test)").len(), 1);
    }

    #[test]
    fn facets_have_the_lexicon_shape() {
        let s = &spans("hi @bob.test")[0];
        assert_eq!(facet(s, None), None);
        let f = facet(s, Some("did:plc:bob")).unwrap();
        assert_eq!(f["index"]["byteStart"], 3);
        assert_eq!(f["index"]["byteEnd"], 12);
        assert_eq!(f["features"][0]["$type"], "app.bsky.richtext.facet#mention");
        assert_eq!(f["features"][0]["did"], "did:plc:bob");
    }

    #[test]
    fn counts_graphemes_not_chars() {
        // A family emoji is several chars but one grapheme.
        let family = "👨‍👩‍👧‍👦";
        assert!(family.chars().count() > 1);
        assert_eq!(graphemes(family), 1);
        // 25 bytes each: 100 fit, 200 are under 300 graphemes but over
        // the 3000-byte limit.
        assert!(fits(&family.repeat(100)));
        assert!(!fits(&family.repeat(200)));
        assert!(fits(&"é".repeat(300)));
        assert!(!fits(&"a".repeat(301)));
    }

    #[test]
    fn splits_at_spaces_into_parts_that_fit() {
        let text = "word ".repeat(200);
        let parts = split(&text);
        assert!(parts.len() >= 4, "{}", parts.len());
        assert!(parts.iter().all(|p| fits(p) && !p.ends_with(' ')));
        assert_eq!(parts.join(" "), text.trim());
        let long = "x".repeat(700);
        let parts = split(&long);
        assert_eq!(
            parts.iter().map(|p| graphemes(p)).collect::<Vec<_>>(),
            [300, 300, 100]
        );
        assert_eq!(split("  "), Vec::<String>::new());
    }
}
