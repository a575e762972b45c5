//! The IRC server restarted while people talk to a bot through the IRC
//! operator: a person on IRC says `!echo p<n>` every 200 ms, the ping bot
//! answers through the bus, and the answers are matched by number. The
//! server (a real ngIRCd) is killed and started again on its port; the
//! IRC operator must reconnect and rejoin by itself (same process), and
//! the person (a raw client here) reconnects as people do.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchboard_proto::api::SupervisedState;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::rig::{operator, start};
use crate::{pingbot, Outcome, Tally, WAIT};

const CHANNEL: &str = "#chaos";

/// A person on IRC, on a raw socket.
struct Person {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Person {
    /// Connect, register, lift ngIRCd's throttling, join the channel.
    async fn join(port: u16) -> anyhow::Result<Person> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let (r, w) = stream.into_split();
        let mut p = Person {
            reader: BufReader::new(r),
            writer: w,
        };
        p.send("NICK person").await?;
        p.send("USER person 0 * :a person").await?;
        p.until(|l| l.contains(" 376 ") || l.contains(" 422 "))
            .await?;
        p.send(&format!(
            "OPER {} {}",
            switchboard_testkit::NgIrcd::OPER_NAME,
            switchboard_testkit::NgIrcd::OPER_PASSWORD
        ))
        .await?;
        p.until(|l| l.contains(" 381 ")).await?;
        p.send("MODE person +F").await?;
        p.send(&format!("JOIN {CHANNEL}")).await?;
        p.until(|l| l.contains(" 366 ")).await?;
        Ok(p)
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        Ok(())
    }

    /// The next line (PINGs answered), or an error when the connection
    /// ends.
    async fn line(&mut self) -> anyhow::Result<String> {
        loop {
            let mut buf = Vec::new();
            if self.reader.read_until(b'\n', &mut buf).await? == 0 {
                anyhow::bail!("the IRC server closed the connection");
            }
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            if let Some(rest) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {rest}")).await?;
                continue;
            }
            return Ok(line);
        }
    }

    async fn until(&mut self, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        tokio::time::timeout(WAIT, async {
            loop {
                let l = self.line().await?;
                if pred(&l) {
                    return Ok(l);
                }
            }
        })
        .await
        .context("no expected line from the IRC server in time")?
    }
}

fn irc_manifest(port: u16) -> String {
    format!(
        "id = \"irc-chaos\"\ncommand = {:?}\nheartbeat_interval = \"100ms\"\nmissed_heartbeats = 5\n\
         stop_timeout = \"1s\"\npublish = [\"chat.irc.irc-chaos.#\"]\nsubscribe = [\"send.irc.irc-chaos.#\"]\n\
         [config]\nserver = \"127.0.0.1\"\nport = {port}\ntls = false\nnick = \"sbbot\"\n\
         channels = [\"{CHANNEL}\"]\n[config.reconnect]\ninitial = \"100ms\"\nmax = \"1s\"\n\
         [config.flood]\nburst = 20\nper_second = 20.0\n",
        switchboard_testkit::bin_path("switchboard-irc")
    )
}

/// The IRC server killed and restarted while people talk to the bot.
///
/// # Errors
///
/// When the rig fails.
pub async fn irc_server_restart() -> anyhow::Result<Outcome> {
    let mut server = switchboard_testkit::NgIrcd::start()?;
    let port = server.port();
    let rig = start(&[
        ("bot.toml".into(), pingbot("bot")),
        ("irc.toml".into(), irc_manifest(port)),
    ])
    .await?;
    rig.try_wait_for("bot", "running", |o| o.state == SupervisedState::Running)
        .await?;
    let before = rig
        .try_wait_for("irc-chaos", "running", |o| {
            o.state == SupervisedState::Running
        })
        .await?;

    let sent: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let answered: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talk = {
        let (sent, answered, stop) = (Arc::clone(&sent), Arc::clone(&answered), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // (Re)connect, as a person would after the server went.
                let mut p = match Person::join(port).await {
                    Ok(p) => p,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    tokio::select! {
                        _ = tick.tick() => {
                            n += 1;
                            if p.send(&format!("PRIVMSG {CHANNEL} :!echo p{n}")).await.is_err() {
                                break;
                            }
                            sent.lock().unwrap_or_else(|e| e.into_inner()).push((n, Instant::now()));
                        }
                        line = p.line() => match line {
                            Ok(l) => {
                                let echoed = l
                                    .strip_prefix(":sbbot")
                                    .and_then(|rest| rest.rsplit_once(" :p"))
                                    .and_then(|(_, k)| k.parse::<u64>().ok());
                                if let Some(k) = echoed {
                                    answered.lock().unwrap_or_else(|e| e.into_inner()).push((k, Instant::now()));
                                }
                            }
                            Err(_) => break,
                        },
                    }
                }
            }
        })
    };
    let count = |v: &Arc<Mutex<Vec<(u64, Instant)>>>| v.lock().map(|v| v.len()).unwrap_or(0);
    // Talking works before the fault.
    let deadline = Instant::now() + WAIT;
    while count(&answered) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted_at = Instant::now();
    // (Kept until the end: dropping it stops the server.)
    let _server = tokio::task::spawn_blocking(move || server.restart().map(|()| server)).await??;
    // Answers again, for a while.
    let at_restart = count(&answered);
    let deadline = Instant::now() + WAIT;
    while count(&answered) < at_restart + 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = count(&answered) >= at_restart + 10;
    let first_after = answered
        .lock()
        .map(|a| a.iter().map(|(_, t)| *t).find(|t| *t > restarted_at))
        .ok()
        .flatten();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    talk.abort();
    let after = operator(&rig, "irc-chaos").await?;
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let answered = answered.lock().map(|a| a.clone()).unwrap_or_default();
    let ids: HashSet<u64> = answered.iter().map(|(k, _)| *k).collect();
    let mut times: Vec<Instant> = answered.iter().map(|(_, t)| *t).collect();
    times.sort();
    let longest_gap = times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let same_process = after.pid == before.pid;
    Ok(Outcome {
        fault: "IRC server SIGKILL and restart",
        expected: "the IRC operator reconnects and rejoins by itself (same process); answers resume; lines sent while the server was down are lost (counted)",
        observed: format!(
            "same process: {same_process}; first answer {} ms after the restart",
            first_after.map_or_else(|| "-".into(), |t| t.duration_since(restarted_at).as_millis().to_string())
        ),
        ok: recovered && same_process,
        tally: Some(Tally {
            sent: sent.len(),
            answered: ids.len(),
            longest_gap,
        }),
        at_most_once: true,
    })
}
