//! The bridge end to end: `switchboard run` supervising two IRC operators
//! on two real IRC networks (two InspIRCd servers) and one or two
//! bridges linking `#a` on the first with `#b` on the second; a person in
//! each channel on a raw socket. Matterbridge's most reported bugs are
//! echoes and duplicates, so every test collects *every* line the bots
//! say in both channels and compares the whole list.

mod common;

use std::time::Duration;

use common::{bridge_manifest, irc_manifest, privmsg_text, Daemon, RawIrcClient, WAIT};
use switchboard_testkit::InspIrcd;

/// Two networks, their IRC operators, the bridges, alice in `#a` on the
/// first and bob in `#b` on the second, with the bridge carrying lines
/// both ways.
struct Rig {
    daemon: Daemon,
    alice: RawIrcClient,
    bob: RawIrcClient,
    servers: (InspIrcd, InspIrcd),
}

async fn rig(bridges: &[&str], relay_joins: bool) -> Rig {
    let a = InspIrcd::start().expect("inspircd (make tools)");
    let b = InspIrcd::start().expect("inspircd (make tools)");
    let mut alice = RawIrcClient::connect(a.port(), "alice").await;
    let mut bob = RawIrcClient::connect(b.port(), "bob").await;
    alice.send("JOIN #a").await;
    alice.expect(WAIT, |l| l.contains(" 366 alice #a ")).await;
    bob.send("JOIN #b").await;
    bob.expect(WAIT, |l| l.contains(" 366 bob #b ")).await;

    let rooms = [("irc-a", "#a"), ("irc-b", "#b")];
    let mut manifests = vec![
        irc_manifest("irc-a", a.port(), "sba", "#a"),
        irc_manifest("irc-b", b.port(), "sbb", "#b"),
    ];
    manifests.extend(
        bridges
            .iter()
            .map(|id| bridge_manifest(id, &rooms, relay_joins)),
    );
    let daemon = Daemon::start(&manifests).await;
    alice
        .expect(WAIT, |l| l.starts_with(":sba!") && l.contains(" JOIN "))
        .await;
    bob.expect(WAIT, |l| l.starts_with(":sbb!") && l.contains(" JOIN "))
        .await;
    let mut ids = vec!["irc-a", "irc-b"];
    ids.extend_from_slice(bridges);
    for id in ids {
        daemon.wait_running(id).await;
    }

    // Everything is subscribed once all are running; one line each way
    // proves the path before the test starts counting.
    let mut rig = Rig {
        daemon,
        alice,
        bob,
        servers: (a, b),
    };
    rig.alice.send("PRIVMSG #a :warm-up").await;
    rig.bob
        .expect(WAIT, |l| {
            privmsg_text(l, "sbb", "#b") == Some("<alice@irc> warm-up")
        })
        .await;
    rig.bob.send("PRIVMSG #b :warm-up").await;
    rig.alice
        .expect(WAIT, |l| {
            privmsg_text(l, "sba", "#a") == Some("<bob@irc> warm-up")
        })
        .await;
    rig.settle().await;
    rig
}

impl Rig {
    /// Lets in-flight lines (a duplicate of the warm-up, say) arrive and
    /// checks there were none.
    async fn settle(&mut self) {
        let a = relayed(
            &self.alice.drain(Duration::from_millis(1500)).await,
            "sba",
            "#a",
        );
        let b = relayed(
            &self.bob.drain(Duration::from_millis(1500)).await,
            "sbb",
            "#b",
        );
        assert!(
            a.is_empty() && b.is_empty(),
            "unexpected lines: #a {a:?}, #b {b:?}"
        );
    }

    /// Every line the bot `nick` says in `channel` until `n` have come
    /// (or [`WAIT`] passed), then whatever else comes in the next 2 s:
    /// duplicates and echoes arrive late, and must be seen.
    async fn collect(
        client: &mut RawIrcClient,
        nick: &str,
        channel: &str,
        n: usize,
    ) -> Vec<String> {
        Self::collect_timed(client, nick, channel, n).await.0
    }

    /// [`Rig::collect`], and when the `n`th line came.
    async fn collect_timed(
        client: &mut RawIrcClient,
        nick: &str,
        channel: &str,
        n: usize,
    ) -> (Vec<String>, std::time::Instant) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match client.next(left).await {
                Some(l) => out.extend(relayed(&[l], nick, channel)),
                None => break,
            }
        }
        let complete = std::time::Instant::now();
        out.extend(relayed(
            &client.drain(Duration::from_secs(2)).await,
            nick,
            channel,
        ));
        (out, complete)
    }

    /// 100 lines from alice and 100 from bob at once; each arrives
    /// complete, in order, once, on the other side only.
    async fn burst_both_ways(&mut self) {
        const N: usize = 100;
        let started = std::time::Instant::now();
        for i in 0..N {
            self.alice.send(&format!("PRIVMSG #a :from a {i}")).await;
            self.bob.send(&format!("PRIVMSG #b :from b {i}")).await;
        }
        let (at_b, complete) = Self::collect_timed(&mut self.bob, "sbb", "#b", N).await;
        // A figure for the report, never asserted.
        eprintln!(
            "burst: {N} lines each way sent; all {N} in #b after {:?}",
            complete - started
        );
        let at_a = Self::collect(&mut self.alice, "sba", "#a", N).await;
        let want_b: Vec<String> = (0..N).map(|i| format!("<alice@irc> from a {i}")).collect();
        let want_a: Vec<String> = (0..N).map(|i| format!("<bob@irc> from b {i}")).collect();
        assert_eq!(at_b, want_b, "what reached #b");
        assert_eq!(at_a, want_a, "what reached #a");
    }
}

/// The texts of the PRIVMSGs from `nick` to `channel` among `lines`.
fn relayed(lines: &[String], nick: &str, channel: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| privmsg_text(l, nick, channel))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_said_in_either_room_appears_once_in_the_other() {
    let mut rig = rig(&["bridge"], true).await;

    rig.alice.send("PRIVMSG #a :hello from a, héllo ✓").await;
    let at_b = Rig::collect(&mut rig.bob, "sbb", "#b", 1).await;
    assert_eq!(at_b, ["<alice@irc> hello from a, héllo ✓"]);
    rig.bob.send("PRIVMSG #b :hello from b").await;
    let at_a = Rig::collect(&mut rig.alice, "sba", "#a", 1).await;
    // Once in #a, and alice's own line never came back to #a.
    assert_eq!(at_a, ["<bob@irc> hello from b"]);

    // relay_joins: carol's join and part in #a are told in #b.
    let mut carol = RawIrcClient::connect(rig.servers.0.port(), "carol").await;
    carol.send("JOIN #a").await;
    carol.expect(WAIT, |l| l.contains(" 366 carol #a ")).await;
    carol.send("PART #a :bye").await;
    let at_b = Rig::collect(&mut rig.bob, "sbb", "#b", 2).await;
    assert_eq!(at_b, ["*** carol@irc joined #a", "*** carol@irc left #a"]);
    rig.settle().await;
    assert!(rig.daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_lines_arrives_complete_and_in_order_both_ways() {
    let mut rig = rig(&["bridge"], false).await;
    rig.burst_both_ways().await;
    assert!(rig.daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_on_the_same_rooms_still_deliver_each_line_once() {
    let mut rig = rig(&["bridge-1", "bridge-2"], false).await;
    rig.alice.send("PRIVMSG #a :said once").await;
    let at_b = Rig::collect(&mut rig.bob, "sbb", "#b", 1).await;
    assert_eq!(at_b, ["<alice@irc> said once"]);
    rig.burst_both_ways().await;
    assert!(rig.daemon.stop().await.success());
}
