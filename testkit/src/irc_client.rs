//! A person on IRC: a plain client on a raw socket (no IRC library, so
//! it cannot share a parsing bug with the operator under test) that
//! registers, answers PINGs and remembers every line it saw.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long registration and [`RawIrcClient::join`] may take.
const WAIT: Duration = Duration::from_secs(20);

/// A plain IRC client on a raw socket (no library), answering PINGs.
pub struct RawIrcClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Its nick.
    pub nick: String,
    /// Every line received, in order.
    pub seen: Vec<String>,
}

impl RawIrcClient {
    /// Connects and registers as `nick`.
    pub async fn connect(port: u16, nick: &str) -> RawIrcClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the IRC server");
        let (r, w) = stream.into_split();
        let mut c = RawIrcClient {
            reader: BufReader::new(r),
            writer: w,
            nick: nick.to_string(),
            seen: Vec::new(),
        };
        c.send(&format!("NICK {nick}")).await;
        c.send(&format!("USER {nick} 0 * :raw test client")).await;
        c.expect(WAIT, |l| l.contains(" 376 ") || l.contains(" 422 "))
            .await;
        c
    }

    /// Sends one line (CRLF added).
    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write to the IRC server");
    }

    /// Joins `channel` and waits for the end of its NAMES.
    pub async fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}")).await;
        let end = format!(" 366 {} {channel} ", self.nick);
        self.expect(WAIT, |l| l.contains(&end)).await;
    }

    /// Lifts ngIRCd's throttling for this client.
    pub async fn unthrottle_ngircd(&mut self) {
        self.send(&format!(
            "OPER {} {}",
            crate::NgIrcd::OPER_NAME,
            crate::NgIrcd::OPER_PASSWORD
        ))
        .await;
        self.expect(WAIT, |l| l.contains(" 381 ")).await;
        self.send(&format!("MODE {} +F", self.nick)).await;
    }

    /// The next line (PINGs are answered and skipped), or None.
    pub async fn next(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let mut buf = Vec::new();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.reader.read_until(b'\n', &mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if let Some(rest) = line.strip_prefix("PING ") {
                        self.send(&format!("PONG {rest}")).await;
                        continue;
                    }
                    self.seen.push(line.clone());
                    return Some(line);
                }
                _ => return None,
            }
        }
    }

    /// The next line matching `pred`; panics with the recent lines after
    /// `within`.
    pub async fn expect(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(l) if pred(&l) => return l,
                Some(_) => continue,
                None => {
                    let tail: Vec<_> = self.seen.iter().rev().take(30).rev().collect();
                    panic!(
                        "{}: no matching line within {within:?}; last lines: {tail:#?}",
                        self.nick
                    )
                }
            }
        }
    }

    /// Every line that arrives within `within`.
    pub async fn drain(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next(left).await {
                Some(l) => out.push(l),
                None => return out,
            }
        }
    }
}

/// The text of a `PRIVMSG` line from `nick` to `target`, if it is one.
pub fn privmsg_text<'a>(line: &'a str, nick: &str, target: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(&format!(":{nick}!"))?;
    let (_, rest) = rest.split_once(' ')?;
    rest.strip_prefix(&format!("PRIVMSG {target} :"))
}
