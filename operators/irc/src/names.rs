//! Nicks and channel names: what is valid to send, and how the server
//! compares them (its `CASEMAPPING`).
//!
//! The checks here are what keeps a name from outside (config, a bus
//! request) from changing the meaning of a line: no spaces (a new
//! parameter), no commas (a second target), no CR/LF/NUL (a new line).

/// Channel prefixes assumed until the server says otherwise (`CHANTYPES`).
pub const DEFAULT_CHANTYPES: &str = "#&+!";

/// How the server folds case when comparing names (ISUPPORT `CASEMAPPING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaseMapping {
    /// Only `A-Z` fold to `a-z`.
    Ascii,
    /// `A-Z[]\~` fold to `a-z{}|^` (the RFC 1459 default).
    #[default]
    Rfc1459,
    /// `A-Z[]\` fold to `a-z{}|`.
    StrictRfc1459,
}

impl CaseMapping {
    /// The mapping named by an ISUPPORT value; unknown names (e.g.
    /// `rfc7613`) fall back to ASCII folding, which is what they do for
    /// ASCII names.
    pub fn from_isupport(value: &str) -> CaseMapping {
        match value.to_ascii_lowercase().as_str() {
            "rfc1459" => CaseMapping::Rfc1459,
            "strict-rfc1459" => CaseMapping::StrictRfc1459,
            _ => CaseMapping::Ascii,
        }
    }
}

/// `name` folded for comparison under `mapping`.
pub fn fold(name: &str, mapping: CaseMapping) -> String {
    name.chars()
        .map(|c| match (c, mapping) {
            ('A'..='Z', _) => c.to_ascii_lowercase(),
            ('[', CaseMapping::Rfc1459 | CaseMapping::StrictRfc1459) => '{',
            (']', CaseMapping::Rfc1459 | CaseMapping::StrictRfc1459) => '}',
            ('\\', CaseMapping::Rfc1459 | CaseMapping::StrictRfc1459) => '|',
            ('~', CaseMapping::Rfc1459) => '^',
            _ => c,
        })
        .collect()
}

/// Whether `name` starts with one of `chantypes`.
pub fn is_channel(name: &str, chantypes: &str) -> bool {
    name.chars().next().is_some_and(|c| chantypes.contains(c))
}

/// Checks a nick we would send (`NICK x`, `PRIVMSG x`): not empty, at
/// most 64 bytes, no spaces or control characters, none of `,*?!@.:`, and
/// not starting like a channel, a digit or `-`.
///
/// The error is a sentence, not a type: it only ever becomes a config
/// problem or a refused request's message; no caller branches on it.
pub fn check_nick(nick: &str) -> Result<(), String> {
    if nick.is_empty() {
        return Err("a nick must not be empty".into());
    }
    if nick.len() > 64 {
        return Err(format!("nick {:?} is longer than 64 bytes", excerpt(nick)));
    }
    if let Some(c) = nick
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || ",*?!@.:".contains(c))
    {
        return Err(format!(
            "nick {:?} contains {c:?}, which nicks cannot have",
            excerpt(nick)
        ));
    }
    let first = nick.chars().next().unwrap_or(' ');
    if "#&$+~%-".contains(first) || first.is_ascii_digit() {
        return Err(format!(
            "nick {:?} cannot start with {first:?}",
            excerpt(nick)
        ));
    }
    Ok(())
}

/// Checks a channel name we would send (`JOIN`, `PRIVMSG`): starts with one
/// of `chantypes`, 2 to 200 bytes, no spaces, commas, BEL or other control
/// characters.
///
/// The error is a sentence for a config problem or a refusal (as
/// [`check_nick`]).
pub fn check_channel(name: &str, chantypes: &str) -> Result<(), String> {
    if !is_channel(name, chantypes) {
        return Err(format!(
            "{:?} is not a channel name (it must start with one of {chantypes})",
            excerpt(name)
        ));
    }
    if name.len() < 2 || name.len() > 200 {
        return Err(format!(
            "channel name {:?} must be 2 to 200 bytes long",
            excerpt(name)
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(format!(
            "channel name {:?} contains {c:?}, which channel names cannot have",
            excerpt(name)
        ));
    }
    Ok(())
}

/// Checks a channel key: 1 to 100 bytes, no spaces, commas or control
/// characters.
///
/// The error is a sentence for a config problem or a refusal (as
/// [`check_nick`]).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 100 {
        return Err("a channel key must be 1 to 100 bytes long".into());
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == ':')
    {
        return Err(
            "a channel key must not contain spaces, commas, `:` or control characters".into(),
        );
    }
    Ok(())
}

/// At most 64 bytes of `s` (cut at a character boundary), for messages.
pub fn excerpt(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding() {
        assert_eq!(fold("Nick[]\\~", CaseMapping::Rfc1459), "nick{}|^");
        assert_eq!(fold("Nick[]\\~", CaseMapping::StrictRfc1459), "nick{}|~");
        assert_eq!(fold("Nick[]\\~", CaseMapping::Ascii), "nick[]\\~");
        assert_eq!(fold("ÉCOLE", CaseMapping::Ascii), "École");
    }

    #[test]
    fn nicks() {
        assert!(check_nick("ferris").is_ok());
        assert!(check_nick("[bot]_^").is_ok());
        for bad in [
            "",
            "a b",
            "a,b",
            "a\r\nQUIT",
            "#chan",
            "1abc",
            "a!b",
            "a@b",
            ":x",
            "a.b",
        ] {
            assert!(check_nick(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn channels() {
        assert!(check_channel("#rust.beginners", DEFAULT_CHANTYPES).is_ok());
        assert!(check_channel("&local", DEFAULT_CHANTYPES).is_ok());
        assert!(check_channel("#é", DEFAULT_CHANTYPES).is_ok());
        for bad in ["rust", "#", "#a b", "#a,#b", "#a\x07", "#a\r\nQUIT :x"] {
            assert!(check_channel(bad, DEFAULT_CHANTYPES).is_err(), "{bad:?}");
        }
        assert!(check_channel("&x", "#").is_err());
    }

    #[test]
    fn keys() {
        assert!(check_key("sekrit").is_ok());
        assert!(check_key("a b").is_err());
        assert!(check_key("").is_err());
    }
}
