//! The round trip a chat user sees (issue 21, item 4): a person on IRC
//! types `!ping` in a channel of a real ngIRCd and waits for `pong`.
//!
//! Two paths on the same server, measured with the same client and clock:
//!
//! 1. raw: `bob`, a plain IRC client in this process, answers `!ping`
//!    with `pong` itself: person -> ngIRCd -> bob -> ngIRCd -> person.
//!    This is the floor any bot on this server has.
//! 2. switchboard: a real `switchboard run` supervises the IRC operator
//!    and the ping bot: person -> ngIRCd -> irc operator -> bus -> pingbot
//!    -> bus -> irc operator -> ngIRCd -> person.
//!
//! The difference is what the bus and the two operators add; the ratio
//! says how much of the whole they are.
//!
//! Pings are sequential and paced (one every [`GAP`]): ngIRCd throttles
//! ordinary clients at about 4 lines a second, and the bot, like any bot
//! on a real network, cannot lift that for itself. Paced below the limit,
//! no sample waits in a throttle or in the operator's own flood queue, so
//! the figures are latency, not queueing. The person lifts the throttle
//! for itself (`OPER`, `MODE +F`) so that its PONGs never delay a ping.
//! The ping bot's own answer limits (per sender, room and network, which
//! by default drop an answer to one person pinging every 350 ms) are
//! switched off in its manifest: the bench measures the path, and an
//! answer the limit drops would be a lost sample, not a slower one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use switchboard_testkit::{privmsg_text, NgIrcd, RawIrcClient};

use crate::daemon::{self, toml_str, Binaries, Daemon, ManifestFile};
use crate::summary::Summary;
use crate::table::Table;

/// Time between the starts of two pings: keeps every client of the
/// server below ngIRCd's throttle (about 50 lines in 12 s).
pub const GAP: Duration = Duration::from_millis(350);

/// Longest a single ping may wait for its pong before it counts as lost.
const PONG_WAIT: Duration = Duration::from_secs(5);

/// The channel the person and the bot meet in.
const CHANNEL: &str = "#bench";

/// How many pings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Recorded pings per path.
    pub pings: usize,
}

impl Settings {
    /// 200 pings (30 with `--quick`), or `pings` when given.
    pub fn new(quick: bool, pings: Option<usize>) -> Settings {
        Settings {
            pings: pings.unwrap_or(if quick { 30 } else { 200 }).max(1),
        }
    }
}

/// What one path measured.
#[derive(Debug, Clone)]
struct Outcome {
    /// Round trips of the pings that were answered, in order.
    samples: Vec<Duration>,
    /// Pings sent.
    sent: usize,
    /// Pongs that came after their ping's [`PONG_WAIT`] (not samples).
    late: usize,
}

impl Outcome {
    fn quantile(&self, q: f64) -> Duration {
        quantile(&self.samples, q)
    }
}

/// The `q` quantile (nearest rank) of `samples`; zero when empty.
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank: the smallest sample with at least q of all at or below.
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// `switchboard-irc` next to the other release binaries.
fn irc_binary(bins: &Binaries) -> anyhow::Result<PathBuf> {
    let dir = bins
        .pingbot
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let p = dir.join("switchboard-irc");
    if !p.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release --workspace --bins` (make bench does)",
            p.display()
        );
    }
    Ok(p)
}

/// Both paths, one table; an ngIRCd that cannot start is reported as not
/// measured rather than failing the whole bench.
pub async fn run(settings: Settings, summary: &mut Summary) -> anyhow::Result<()> {
    let bins = Binaries::find()?;
    let irc = irc_binary(&bins)?;
    let ircd = match NgIrcd::start() {
        Ok(s) => s,
        Err(e) => {
            summary.unmeasured.push(format!(
                "IRC !ping round trip: ngircd did not start ({e}); make tools installs it"
            ));
            return Ok(());
        }
    };
    eprintln!("irc: raw round trip, {} pings", settings.pings);
    let raw = raw_round_trips(ircd.port(), settings).await?;
    eprintln!("irc: through switchboard, {} pings", settings.pings);
    let through = daemon_round_trips(&bins, &irc, ircd.port(), settings).await?;
    print_table(&raw, &through);
    for (what, o) in [("raw IRC", &raw), ("switchboard", &through)] {
        if o.samples.len() < o.sent {
            summary.unmeasured.push(format!(
                "IRC !ping {what}: {} of {} pings had no pong within {PONG_WAIT:?} ({} came later; left out of the figures)",
                o.sent - o.samples.len(),
                o.sent,
                o.late
            ));
        }
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn print_table(raw: &Outcome, through: &Outcome) {
    let mut t = Table::new(
        format!(
            "IRC !ping -> pong, as the person sees it: ngIRCd on loopback, sequential pings, one every {} ms",
            GAP.as_millis()
        ),
        &["path", "p50", "p99", "mean", "answered"],
    );
    for (label, o) in [
        (
            "raw: person -> ngircd -> raw client -> ngircd -> person",
            raw,
        ),
        (
            "switchboard: ... -> irc operator -> bus -> pingbot -> bus -> irc operator -> ...",
            through,
        ),
    ] {
        let mean = if o.samples.is_empty() {
            0.0
        } else {
            o.samples.iter().map(Duration::as_secs_f64).sum::<f64>() / o.samples.len() as f64
        };
        t.row(vec![
            label.to_owned(),
            ms(o.quantile(0.5)),
            ms(o.quantile(0.99)),
            format!("{:.2} ms", mean * 1e3),
            format!("{}/{}", o.samples.len(), o.sent),
        ]);
    }
    let (r50, t50) = (raw.quantile(0.5), through.quantile(0.5));
    if !r50.is_zero() && !t50.is_zero() {
        let added = t50.saturating_sub(r50);
        t.note(format!(
            "the bus and the two operators add {} at p50 ({:.1}x the raw round trip; {:.0}% of what the person waits)",
            ms(added),
            t50.as_secs_f64() / r50.as_secs_f64(),
            100.0 * added.as_secs_f64() / t50.as_secs_f64()
        ));
    }
    println!("{t}");
}

/// The person: connected, throttle lifted, in the channel (joined by
/// hand so that the names list showing `bot` is seen).
async fn person(port: u16, bot: &str) -> anyhow::Result<RawIrcClient> {
    let mut alice = RawIrcClient::connect(port, "alice").await;
    alice.unthrottle_ngircd().await;
    alice.send(&format!("JOIN {CHANNEL}")).await;
    let joined = format!(":{bot}!");
    let names = " 353 alice ".to_owned();
    let mut seen = false;
    let deadline = Instant::now() + daemon::WAIT;
    while !seen {
        let left = deadline.saturating_duration_since(Instant::now());
        match alice.next(left).await {
            Some(l) => {
                seen = (l.starts_with(&joined) && l.contains(" JOIN "))
                    || (l.contains(&names)
                        && l.split(' ')
                            .any(|w| w.trim_start_matches([':', '@', '+']) == bot));
            }
            None => bail!("{bot} never showed in {CHANNEL} within {:?}", daemon::WAIT),
        }
    }
    Ok(alice)
}

/// Ask until the first pong (the bot may not be subscribed yet), then let
/// any extra answers pass.
async fn warm_up(alice: &mut RawIrcClient, bot: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + daemon::WAIT;
    'asking: loop {
        if Instant::now() >= deadline {
            bail!("no pong from {bot} within {:?}", daemon::WAIT);
        }
        alice.send(&format!("PRIVMSG {CHANNEL} :!ping")).await;
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match alice.next(left).await {
                Some(l) if privmsg_text(&l, bot, CHANNEL) == Some("pong") => break 'asking,
                Some(_) => {}
                None => break,
            }
        }
    }
    alice.drain(Duration::from_millis(1500)).await;
    Ok(())
}

/// `pings` sequential pings, one every [`GAP`].
async fn measure(alice: &mut RawIrcClient, bot: &str, pings: usize) -> Outcome {
    let mut samples = Vec::with_capacity(pings);
    let mut late = 0;
    for _ in 0..pings {
        let start = Instant::now();
        alice.send(&format!("PRIVMSG {CHANNEL} :!ping")).await;
        let deadline = start + PONG_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match alice.next(left).await {
                Some(l) if privmsg_text(&l, bot, CHANNEL) == Some("pong") => {
                    samples.push(start.elapsed());
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        // Keep the record of lines short: only the recent ones are of use.
        if alice.seen.len() > 100 {
            alice.seen.drain(..50);
        }
        // Read until the next ping is due: a pong arriving now belongs to
        // an earlier ping (after its timeout) and must not be taken for
        // the next one's.
        let due = start + GAP;
        while let Some(left) = due.checked_duration_since(Instant::now()) {
            match alice.next(left).await {
                Some(l) if privmsg_text(&l, bot, CHANNEL) == Some("pong") => late += 1,
                Some(_) => {}
                None => break,
            }
        }
    }
    Outcome {
        samples,
        sent: pings,
        late,
    }
}

/// The floor: a raw client answers in place of the bot.
async fn raw_round_trips(port: u16, settings: Settings) -> anyhow::Result<Outcome> {
    let mut bob = RawIrcClient::connect(port, "bob").await;
    bob.join(CHANNEL).await;
    // bob answers as the pingbot would: every `!ping` in the channel.
    let answerer = tokio::spawn(async move {
        loop {
            match bob.next(Duration::from_secs(3600)).await {
                Some(l) => {
                    let is_ping = l
                        .split_once(" PRIVMSG ")
                        .is_some_and(|(_, rest)| rest == format!("{CHANNEL} :!ping"));
                    if is_ping {
                        bob.send(&format!("PRIVMSG {CHANNEL} :pong")).await;
                    }
                    if bob.seen.len() > 100 {
                        bob.seen.clear();
                    }
                }
                None => return,
            }
        }
    });
    let result = async {
        let mut alice = person(port, "bob").await?;
        warm_up(&mut alice, "bob").await?;
        let outcome = measure(&mut alice, "bob", settings.pings).await;
        alice.send("QUIT").await;
        anyhow::Ok(outcome)
    }
    .await;
    answerer.abort();
    result
}

/// The product: the daemon with the IRC operator and the ping bot.
async fn daemon_round_trips(
    bins: &Binaries,
    irc: &Path,
    port: u16,
    settings: Settings,
) -> anyhow::Result<Outcome> {
    let manifests: Vec<ManifestFile> = vec![
        (
            "irc.toml".into(),
            format!(
                "id = \"irc-bench\"\ncommand = {}\nheartbeat_interval = \"1s\"\nstop_timeout = \"2s\"\n\
                 publish = [\"chat.irc.irc-bench.#\"]\nsubscribe = [\"send.irc.irc-bench.#\"]\n\
                 [config]\nserver = \"127.0.0.1\"\nport = {port}\ntls = false\nnick = \"sbbot\"\n\
                 channels = [\"{CHANNEL}\"]\n",
                toml_str(&irc.display().to_string())
            ),
        ),
        (
            "pingbot.toml".into(),
            format!(
                "id = \"pingbot\"\ncommand = {}\n[config]\nlisten = [\"chat.irc.#.message\"]\n\
                 [config.rate]\nsender = \"off\"\nroom = \"off\"\nnetwork = \"off\"\n",
                toml_str(&bins.pingbot.display().to_string())
            ),
        ),
    ];
    let mut daemon = Daemon::spawn(bins, &manifests)?;
    daemon.runtime_info().await.with_context(|| {
        format!(
            "switchboard run did not come up; log: {}",
            daemon.tail_log()
        )
    })?;
    let result = async {
        let mut alice = person(port, "sbbot").await?;
        warm_up(&mut alice, "sbbot").await?;
        let outcome = measure(&mut alice, "sbbot", settings.pings).await;
        alice.send("QUIT").await;
        anyhow::Ok(outcome)
    }
    .await
    .with_context(|| format!("daemon log: {}", daemon.tail_log()));
    if let Ok(o) = &result {
        if o.samples.len() < o.sent {
            eprintln!(
                "irc: {} pings unanswered; the daemon's log ends:\n{}",
                o.sent - o.samples.len(),
                daemon.tail_log()
            );
        }
    }
    let left = daemon.stop().await?;
    if !left.is_empty() {
        bail!("switchboard run left processes behind (killed): {left:?}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let ms = |n: u64| Duration::from_millis(n);
        let v: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(quantile(&v, 0.5), ms(50));
        assert_eq!(quantile(&v, 0.99), ms(99));
        assert_eq!(quantile(&[ms(7)], 0.99), ms(7));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
