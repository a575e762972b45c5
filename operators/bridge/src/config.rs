//! The bridge's `[config]` table: gateways, their members, the text
//! format and the rate limit.

use serde::Deserialize;
use switchboard_proto::ChatAddress;

/// Every gateway the bridge runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The gateways; at least one.
    pub gateways: Vec<Gateway>,
}

/// A set of rooms linked together.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// A name for logs and counters, unique among the gateways.
    pub name: String,
    /// The linked rooms; at least two.
    pub members: Vec<Member>,
    /// How a relayed message reads. Placeholders: `{nick}`, `{protocol}`,
    /// `{instance}`, `{room}` (where it was said) and `{text}` (required).
    /// Default `<{nick}@{protocol}> {text}`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Relay joins, parts and quits too (as `*** nick@protocol joined
    /// #room`). Default false.
    #[serde(default)]
    pub relay_joins: bool,
    /// How fast this gateway sends.
    #[serde(default)]
    pub rate: Rate,
}

/// One room of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Protocol token, e.g. `irc`.
    pub protocol: String,
    /// The protocol operator's instance, e.g. `irc-libera`.
    pub instance: String,
    /// The raw room name, e.g. `#rust`.
    pub room: String,
    /// Whether the room is read (`in`), written (`out`) or both
    /// (`inout`, the default).
    #[serde(default)]
    pub direction: Direction,
}

impl Member {
    /// The member's room as an address.
    pub fn address(&self) -> ChatAddress {
        ChatAddress::new(&self.protocol, &self.instance, &self.room)
    }
}

/// Which way a member's messages go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Read only: what is said there goes to the others.
    In,
    /// Write only: receives what is said in the others.
    Out,
    /// Both.
    #[default]
    Inout,
}

impl Direction {
    /// Whether the bridge reads this member.
    pub fn reads(self) -> bool {
        matches!(self, Direction::In | Direction::Inout)
    }

    /// Whether the bridge writes into this member.
    pub fn writes(self) -> bool {
        matches!(self, Direction::Out | Direction::Inout)
    }
}

/// A gateway's token bucket and queue. Messages over the rate wait in the
/// queue (in order); past `max_queue` they are shed and counted in
/// `bridge_shed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Messages that may go at once after a quiet period. Default 10.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Sustained messages per second. Default 5.
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    /// Most messages waiting. Default 1000.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            burst: default_burst(),
            per_second: default_per_second(),
            max_queue: default_max_queue(),
        }
    }
}

fn default_format() -> String {
    "<{nick}@{protocol}> {text}".to_owned()
}
fn default_burst() -> u32 {
    10
}
fn default_per_second() -> f64 {
    5.0
}
fn default_max_queue() -> usize {
    1000
}

/// The placeholders a `format` may use.
pub const PLACEHOLDERS: [&str; 5] = ["{nick}", "{protocol}", "{instance}", "{room}", "{text}"];

/// A configuration serde accepted but that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No gateway.
    #[error("`gateways` is empty; add a [[config.gateways]] with at least two members")]
    NoGateways,
    /// A gateway name used twice or empty.
    #[error("gateway name `{name}` is empty or used twice; give each gateway its own name")]
    Name {
        /// The name.
        name: String,
    },
    /// A gateway with nothing to relay.
    #[error("gateway `{gateway}`: {problem}")]
    Members {
        /// The gateway.
        gateway: String,
        /// What is wrong with its members.
        problem: String,
    },
    /// A bad `format`.
    #[error("gateway `{gateway}`: `format` = {format:?} {problem}; placeholders are {list}", list = PLACEHOLDERS.join(", "))]
    Format {
        /// The gateway.
        gateway: String,
        /// The format.
        format: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A bad rate.
    #[error("gateway `{gateway}`: `rate`: {problem}")]
    Rate {
        /// The gateway.
        gateway: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// A configuration this operator cannot use fails `start`/`reload` as a
/// configuration error, kept as its source.
impl From<ConfigError> for switchboard_bus::HandlerError {
    fn from(e: ConfigError) -> switchboard_bus::HandlerError {
        switchboard_bus::HandlerError::new(switchboard_bus::HandlerErrorKind::Config, e)
    }
}

switchboard_proto::error_kinds! {
    /// Coarse classes of [`ConfigError`].
    ConfigError => ConfigErrorKind { NoGateways, Name, Members, Format, Rate }
}

impl BridgeConfig {
    /// What serde cannot check, with the fix in the message.
    ///
    /// # Errors
    ///
    /// The first problem found.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.gateways.is_empty() {
            return Err(ConfigError::NoGateways);
        }
        let mut names = std::collections::BTreeSet::new();
        for g in &self.gateways {
            if g.name.is_empty() || !names.insert(g.name.as_str()) {
                return Err(ConfigError::Name {
                    name: g.name.clone(),
                });
            }
            g.check()?;
        }
        Ok(())
    }
}

impl Gateway {
    fn check(&self) -> Result<(), ConfigError> {
        let members = |problem: String| ConfigError::Members {
            gateway: self.name.clone(),
            problem,
        };
        for (i, m) in self.members.iter().enumerate() {
            if m.protocol.is_empty() || m.instance.is_empty() || m.room.is_empty() {
                return Err(members(format!(
                    "member {} needs a non-empty `protocol`, `instance` and `room`",
                    i + 1
                )));
            }
            if self.members[..i].iter().any(|o| o.address() == m.address()) {
                return Err(members(format!(
                    "{}/{}/{} is listed twice; list each room once (use direction = \"inout\")",
                    m.protocol, m.instance, m.room
                )));
            }
        }
        let readers = self.members.iter().filter(|m| m.direction.reads()).count();
        let writers = self.members.iter().filter(|m| m.direction.writes()).count();
        let relays = self.members.iter().any(|m| {
            m.direction.reads() && self.members.iter().any(|o| o != m && o.direction.writes())
        });
        if readers == 0 || writers == 0 || !relays {
            return Err(members(
                "nothing to relay: it needs an `in` or `inout` member and another `out` or `inout` member".to_owned(),
            ));
        }
        let format = |problem| ConfigError::Format {
            gateway: self.name.clone(),
            format: self.format.clone(),
            problem,
        };
        if !self.format.contains("{text}") {
            return Err(format("has no {text}"));
        }
        let mut rest = self.format.clone();
        for p in PLACEHOLDERS {
            rest = rest.replace(p, "");
        }
        if rest.contains('{') || rest.contains('}') {
            return Err(format("has an unknown placeholder"));
        }
        let rate = |problem| ConfigError::Rate {
            gateway: self.name.clone(),
            problem,
        };
        if self.rate.burst == 0 {
            return Err(rate("`burst` must be at least 1"));
        }
        if !(self.rate.per_second.is_finite() && self.rate.per_second > 0.0) {
            return Err(rate("`per_second` must be a number above 0, e.g. 5.0"));
        }
        if self.rate.max_queue == 0 {
            return Err(rate("`max_queue` must be at least 1"));
        }
        Ok(())
    }
}
