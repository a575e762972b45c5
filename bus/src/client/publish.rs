//! What a publish checks and reuses: the subject check, and the buffers
//! and last subject that let [`Bus::publish`] allocate nothing of its own
//! per message (issue 21, docs/benchmarks.md).

use std::sync::PoisonError;

use bytes::{Bytes, BytesMut};
use switchboard_proto::Envelope;

use super::Bus;
use crate::error::PublishError;

/// What [`Bus::publish`] reuses, so that a publish in the usual case
/// allocates nothing of its own (each allocation and its free on the
/// connection's thread cost ~150 instructions, the subject check ~450):
/// the vector envelopes are encoded into, the buffer each payload is
/// split off, and the last subject published on, already checked, as the
/// client's shared `Subject`.
///
/// Why both a vector and a buffer: encoding writes many small pieces,
/// which a `Vec` takes inline; the same writes into a `BytesMut` went
/// through its generic `put_slice` and cost ~900 instructions more per
/// 128-byte envelope than one copy of the finished bytes.
#[derive(Debug)]
pub(super) struct PublishScratch {
    encoded: Vec<u8>,
    buf: BytesMut,
    subject: Option<async_nats::Subject>,
}

/// How much [`PublishScratch::buf`] takes at a time: payloads are split
/// off it until it is used up, then the next publish takes a new one (or
/// the same one again, once every payload split off it was written and
/// dropped). At most this much stays held by a payload still queued.
pub(super) const PUBLISH_BUFFER: usize = 64 * 1024;

impl PublishScratch {
    pub(super) fn new() -> PublishScratch {
        PublishScratch {
            encoded: Vec::new(),
            buf: BytesMut::with_capacity(PUBLISH_BUFFER),
            subject: None,
        }
    }
}

impl Bus {
    /// `subject`, checked, and `envelope`'s encoding, from the
    /// [`PublishScratch`]: the subject is checked and copied only when it
    /// differs from the last one.
    pub(crate) fn encode(
        &self,
        subject: &str,
        envelope: &Envelope,
    ) -> Result<(async_nats::Subject, Bytes), PublishError> {
        // Nothing in here panics while holding the lock, but a poisoned
        // scratch is still a valid one.
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let nats_subject = match &scratch.subject {
            Some(last) if last.as_str() == subject => last.clone(),
            _ => {
                validate_publish_subject(subject)?;
                let checked = async_nats::Subject::from(subject);
                scratch.subject = Some(checked.clone());
                checked
            }
        };
        let PublishScratch { encoded, buf, .. } = &mut *scratch;
        encoded.clear();
        envelope.write_to(encoded);
        buf.extend_from_slice(encoded);
        let payload = buf.split().freeze();
        if payload.len() > PUBLISH_BUFFER {
            // The buffers grew for this one: let them go (the buffer with
            // the payload) rather than keep large ones for the small
            // envelopes after it.
            *encoded = Vec::new();
            *buf = BytesMut::with_capacity(PUBLISH_BUFFER);
        }
        Ok((nats_subject, payload))
    }
}

/// Reject subjects NATS would silently mishandle, with a message that says
/// which token is wrong.
///
/// On every publish, so one pass over the bytes: ASCII tokens (the usual
/// case) are checked byte by byte; a token with other characters falls
/// back to Unicode's whitespace and control classes.
pub(crate) fn validate_publish_subject(subject: &str) -> Result<(), PublishError> {
    let bad = |reason: String| PublishError::BadSubject {
        subject: subject.to_string(),
        reason,
    };
    if subject.is_empty() {
        return Err(bad("the subject is empty".into()));
    }
    // One pass over the bytes: forbidden ASCII at once, token checks at
    // each dot and at the end.
    let bytes = subject.as_bytes();
    let mut start = 0;
    let mut index = 1;
    let mut plain = true;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'.' {
            // Most tokens are plain and longer than one byte: nothing
            // more to check for them.
            if !plain || i - start < 2 {
                check_token(subject, start, i, index, plain)?;
            }
            start = i + 1;
            index += 1;
            plain = true;
        } else if b <= b' ' || b == 0x7f {
            return Err(bad(format!("token {index} contains whitespace")));
        } else if b >= 0x80 {
            plain = false;
        }
    }
    check_token(subject, start, bytes.len(), index, plain)?;
    Ok(())
}

/// The checks of token number `index`, `subject[start..end]`, that need
/// the whole token: not empty, not a wildcard, and (when it has non-ASCII
/// characters) no Unicode whitespace or control character.
fn check_token(
    subject: &str,
    start: usize,
    end: usize,
    index: usize,
    plain: bool,
) -> Result<(), PublishError> {
    let bad = |reason: String| PublishError::BadSubject {
        subject: subject.to_string(),
        reason,
    };
    // Tokens end at ASCII dots, so these are char boundaries.
    let token = subject.get(start..end).unwrap_or_default();
    if token.is_empty() {
        return Err(bad(format!("token {index} is empty")));
    }
    if token == "*" || token == ">" {
        return Err(bad(format!(
            "token {index} is a wildcard; publish needs a literal subject"
        )));
    }
    if !plain && token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(format!("token {index} contains whitespace")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subject_validation() {
        assert!(validate_publish_subject("chat.irc.x.y.message").is_ok());
        assert!(validate_publish_subject("chat.irc.x.=23caf\u{e9}.message").is_ok());
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a.*",
            "a.>",
            "a b",
            "a.\tb",
            "a.b\u{7f}",
            "a.\u{a0}",
            "x.\u{85}",
        ] {
            let e = validate_publish_subject(bad).unwrap_err();
            assert!(e.to_string().contains("cannot publish"), "{e}");
        }
    }
}
