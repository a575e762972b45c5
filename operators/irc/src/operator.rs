//! [`IrcOperator`]: the bus side. Subscribes to
//! `send.irc.<instance>.*.*`, turns each request into a session
//! [`Request`] (or refuses it with a [`SendResult`]), and maps the
//! lifecycle verbs onto the session: `reload` without reconnecting when
//! the server settings stay, `halt`/`resume` pause publishing, `stop`
//! sends QUIT.

use std::time::Duration;

use serde::Deserialize;
use switchboard_bus::proto::{kinds, ChatPattern};
use switchboard_bus::send::{self, SendRequestError};
use switchboard_bus::{Context, Delivery, HandlerResult, Operator};

use crate::config::IrcConfig;
use crate::outbound::TextKind;
use crate::session::{Request, SessionHandle, Stopped};

/// The `<kind>` of requests to send a raw IRC line (only with `allow_raw`).
pub const RAW: &str = "raw";

/// The IRC operator. Hand it to [`switchboard_bus::run`].
#[derive(Debug, Default)]
pub struct IrcOperator {
    session: Option<SessionHandle>,
    instance: String,
}

impl IrcOperator {
    /// An operator that will connect when started.
    pub fn new() -> IrcOperator {
        IrcOperator::default()
    }

    async fn subscribe(ctx: &mut Context, instance: &str) -> HandlerResult {
        // send.irc.<instance>.*.*
        let pattern = ChatPattern::send().protocol("irc").instance(instance);
        ctx.subscribe(&pattern).await?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct TextBody {
    text: String,
}

#[derive(Deserialize, Default)]
struct JoinBody {
    #[serde(default)]
    key: Option<String>,
}

#[derive(Deserialize, Default)]
struct PartBody {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct NickBody {
    nick: String,
}

/// Why a send request is not handed to the IRC session. The message is
/// the sentence the sender gets back (`{"ok": false, "error": …}`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a send request this operator can read (subject, body, kind).
    #[error(transparent)]
    Request(#[from] SendRequestError),
    /// No session: the operator has not started, or has stopped.
    #[error("the IRC session is not running")]
    NotRunning,
    /// The session task ended, so nothing can be sent any more.
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`Refusal`].
    Refusal => RefusalKind { Request, NotRunning, Stopped }
}

/// The session request for one delivery, or why it is refused.
pub fn request_for(delivery: &Delivery, instance: &str) -> Result<Request, SendRequestError> {
    let asked = send::Request::parse(delivery, "irc", instance)?;
    let reply = delivery.reply.clone();
    let room = asked.room.clone();
    let text_kind = match asked.kind.as_str() {
        kinds::MESSAGE => Some(TextKind::Message),
        kinds::ACTION => Some(TextKind::Action),
        kinds::NOTICE => Some(TextKind::Notice),
        _ => None,
    };
    if let Some(kind) = text_kind {
        let b: TextBody = asked.body(r#"{"text": "..."}"#)?;
        return Ok(Request::Text {
            kind,
            room,
            text: b.text,
            reply,
        });
    }
    match asked.kind.as_str() {
        kinds::JOIN => {
            let b: JoinBody = asked.body(r#"{} or {"key": "..."}"#)?;
            Ok(Request::Join {
                room,
                key: b.key,
                reply,
            })
        }
        kinds::PART => {
            let b: PartBody = asked.body(r#"{} or {"text": "reason"}"#)?;
            Ok(Request::Part {
                room,
                reason: b.text,
                reply,
            })
        }
        kinds::NICK => {
            let b: NickBody = asked.body(r#"{"nick": "..."}"#)?;
            Ok(Request::Nick {
                nick: b.nick,
                reply,
            })
        }
        RAW => {
            let b: TextBody = asked.body(r#"{"text": "RAW IRC LINE"}"#)?;
            Ok(Request::Raw {
                line: b.text,
                reply,
            })
        }
        _ => Err(asked.unknown_kind(
            "the IRC operator sends message, action, notice, join, part, nick and raw",
        )),
    }
}

impl Operator for IrcOperator {
    type Config = IrcConfig;

    fn version(&self) -> Option<String> {
        Some(env!("CARGO_PKG_VERSION").to_string())
    }

    async fn start(&mut self, ctx: &mut Context, config: IrcConfig) -> HandlerResult {
        let instance = switchboard_bus::authentic::own_instance(
            ctx.id().as_str(),
            config.instance.as_deref(),
        )?;
        if config.tls {
            // A CA file that cannot be read is a setup error, not a network one.
            crate::transport::tls_config(&config).map_err(|e| format!("TLS setup: {e}"))?;
        }
        Self::subscribe(ctx, &instance).await?;
        tracing::info!(server = %config.address(), %instance, nick = %config.nick, "starting");
        self.session = Some(SessionHandle::spawn(
            ctx.bus().clone(),
            instance.clone(),
            config,
        ));
        self.instance = instance;
        Ok(())
    }

    async fn message(&mut self, ctx: &mut Context, delivery: Delivery) -> HandlerResult {
        let outcome = match (&self.session, request_for(&delivery, &self.instance)) {
            (Some(session), Ok(request)) => session.send(request).await.map_err(Refusal::from),
            (None, Ok(_)) => Err(Refusal::NotRunning),
            (_, Err(e)) => Err(e.into()),
        };
        if let Err(error) = outcome {
            ctx.refuse(&delivery, &error).await?;
        }
        Ok(())
    }

    async fn reload(&mut self, ctx: &mut Context, config: IrcConfig) -> HandlerResult {
        let Some(session) = &self.session else {
            return self.start(ctx, config).await;
        };
        let instance = switchboard_bus::authentic::own_instance(
            ctx.id().as_str(),
            config.instance.as_deref(),
        )?;
        if instance != self.instance {
            ctx.clear_subscriptions();
            Self::subscribe(ctx, &instance).await?;
            self.instance = instance.clone();
        }
        session
            .send(Request::Reload(Box::new(config), instance))
            .await?;
        Ok(())
    }

    async fn halt(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(s) = &self.session {
            s.send(Request::Pause(true)).await?;
        }
        Ok(())
    }

    async fn resume(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(s) = &self.session {
            s.send(Request::Pause(false)).await?;
        }
        Ok(())
    }

    async fn stop(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(s) = self.session.take() {
            s.shutdown(Duration::from_secs(3)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use switchboard_bus::proto::{ChatAddress, Envelope};
    use switchboard_bus::send::SendRequestErrorKind;

    fn delivery(room: &str, kind: &str, body: Value) -> Delivery {
        Delivery::new(
            ChatAddress::new("irc", "net", room).send_subject(kind),
            Envelope::new("test", body),
        )
        .with_reply("_INBOX.x")
    }

    #[test]
    fn maps_each_kind() {
        let r = request_for(&delivery("#a", "action", json!({"text": "hi"})), "net").unwrap();
        assert!(
            matches!(r, Request::Text { kind: TextKind::Action, ref room, ref text, .. } if room == "#a" && text == "hi")
        );
        let r = request_for(&delivery("#a", "join", Value::Null), "net").unwrap();
        assert!(matches!(r, Request::Join { key: None, .. }));
        let r = request_for(&delivery("#a", "join", json!({"key": "k"})), "net").unwrap();
        assert!(matches!(r, Request::Join { key: Some(ref k), .. } if k == "k"));
        let r = request_for(&delivery("#a", "part", json!({"text": "bye"})), "net").unwrap();
        assert!(matches!(r, Request::Part { reason: Some(ref t), .. } if t == "bye"));
        let r = request_for(&delivery("", "nick", json!({"nick": "n2"})), "net").unwrap();
        assert!(matches!(r, Request::Nick { ref nick, .. } if nick == "n2"));
        let r = request_for(&delivery("", "raw", json!({"text": "MODE n +i"})), "net").unwrap();
        assert!(matches!(r, Request::Raw { ref line, reply: Some(_) } if line == "MODE n +i"));
    }

    #[test]
    fn refuses_with_reasons() {
        let refused = |d: Delivery, instance: &str| match request_for(&d, instance) {
            Ok(r) => panic!("not refused: {r:?}"),
            Err(e) => (e.kind(), e.to_string()),
        };
        let (kind, e) = refused(delivery("#a", "message", json!({"txt": "x"})), "net");
        assert!(
            kind == SendRequestErrorKind::BadBody && e.contains("bad body"),
            "{e}"
        );
        let (kind, e) = refused(delivery("#a", "message", json!({"text": 5})), "net");
        assert!(
            kind == SendRequestErrorKind::BadBody && e.contains("bad body"),
            "{e}"
        );
        let (kind, e) = refused(delivery("#a", "wave", json!({})), "net");
        assert!(
            kind == SendRequestErrorKind::UnknownKind && e.contains("unknown kind"),
            "{e}"
        );
        let (kind, e) = refused(delivery("#a", "message", json!({"text": "x"})), "other");
        assert!(
            kind == SendRequestErrorKind::NotOurs && e.contains("not a send request"),
            "{e}"
        );
        assert_eq!(
            e,
            format!(
                "subject {} is not a send request for irc instance other",
                ChatAddress::new("irc", "net", "#a").send_subject("message")
            )
        );
    }
}
