//! Shared pieces of the bridge's end-to-end tests: manifests for IRC
//! operators and bridges under the testkit's daemon, and the testkit's
//! raw-socket IRC client playing a person.

#![allow(dead_code)] // each test uses a different part

use std::time::Duration;

use switchboard_testkit::bin_path;

pub use switchboard_testkit::daemon::Daemon;
pub use switchboard_testkit::{privmsg_text, RawIrcClient};

pub const WAIT: Duration = Duration::from_secs(20);

/// The manifest of an IRC operator `id` on 127.0.0.1:`port` in `channel`,
/// with flood control opened up for a 100-line burst (the servers in
/// these tests do not throttle).
pub fn irc_manifest(id: &str, port: u16, nick: &str, channel: &str) -> (String, String) {
    (
        format!("{id}.toml"),
        format!(
            "id = \"{id}\"\ncommand = {:?}\nheartbeat_interval = \"500ms\"\nstop_timeout = \"2s\"\n\
             publish = [\"chat.irc.{id}.#\"]\nsubscribe = [\"send.irc.{id}.#\"]\n\
             [config]\nserver = \"127.0.0.1\"\nport = {port}\nnick = \"{nick}\"\nchannels = [\"{channel}\"]\n\
             [config.flood]\nburst = 200\nper_second = 200.0\nwindow_bytes = 0\n",
            bin_path("switchboard-irc")
        ),
    )
}

/// The manifest of a bridge `id` with one gateway over `rooms` (instance,
/// channel), granted exactly the subjects it reads and writes.
pub fn bridge_manifest(id: &str, rooms: &[(&str, &str)], relay_joins: bool) -> (String, String) {
    let escape = |c: &str| c.replace('#', "=23");
    let kinds: &[&str] = if relay_joins {
        &["message", "join", "part", "quit"]
    } else {
        &["message"]
    };
    let subscribe: Vec<String> = rooms
        .iter()
        .flat_map(|(i, c)| {
            kinds
                .iter()
                .map(move |k| format!("\"chat.irc.{i}.{}.{k}\"", escape(c)))
        })
        .collect();
    let publish: Vec<String> = rooms
        .iter()
        .map(|(i, c)| format!("\"send.irc.{i}.{}.message\"", escape(c)))
        .collect();
    let members: String = rooms
        .iter()
        .map(|(i, c)| {
            format!("[[config.gateways.members]]\nprotocol = \"irc\"\ninstance = \"{i}\"\nroom = \"{c}\"\n")
        })
        .collect();
    (
        format!("{id}.toml"),
        format!(
            "id = \"{id}\"\ncommand = {:?}\nheartbeat_interval = \"500ms\"\n\
             publish = [{}]\nsubscribe = [{}]\n\
             [[config.gateways]]\nname = \"lobby\"\nrelay_joins = {relay_joins}\n\
             rate = {{ burst = 200, per_second = 200.0 }}\n{members}",
            bin_path("switchboard-bridge"),
            publish.join(", "),
            subscribe.join(", "),
        ),
    )
}
