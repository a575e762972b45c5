//! The child of the instruction-count guard (`tests/icount.rs`): one case
//! of the publish/receive path, run under callgrind between two markers.
//!
//! `icount <case> <nats-url> <messages>` where case is `raw-<bytes>`
//! (async-nats publishing the same encoded envelope, a subscriber counting
//! payloads), `bus-<bytes>` (`Bus::publish` of an envelope with a fresh id
//! each time, `Bus::subscribe` reading its body as text), `ids-<bytes>`
//! (the same with [`BusOptions::stream_ids`]: the `Nats-Msg-Id` header an
//! operator under a daemon with a stream sends) or
//! `stored-<bytes>` (`Bus::publish_stored`, one at a time, into a stream).
//! It connects, warms up, then calls [`begin`], runs `messages` and calls
//! [`end`]; callgrind counts only in between (`--zero-before=*begin`,
//! `--dump-before=*end`). Prints `received <n>`.
//!
//! An example of the bus crate rather than a part of `switchboard-bench`:
//! it builds in release with the bus's dependencies only, which keeps the
//! guard's cost in `make test` to a small release build.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::StreamExt as _;
use switchboard_bus::proto::headers;
use switchboard_bus::stream::StreamSpec;
use switchboard_bus::{Bus, BusOptions, Envelope, Pattern};
use tokio::sync::Notify;

const SUBJECT: &str = "chat.irc.libera.room.message";
/// Most messages in flight: the consumer never falls so far behind that
/// its queue (65,536) would drop.
const WINDOW: u64 = 4_096;
const CAPACITY: usize = 65_536;

/// Marker: callgrind zeroes its counters when this is entered.
#[inline(never)]
pub fn begin() {
    std::hint::black_box(0xb361_u32);
}

/// Marker: callgrind writes its counters out when this is entered.
#[inline(never)]
pub fn end() {
    std::hint::black_box(0xe4d0_u32);
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Raw,
    Bus,
    Ids,
    Stored,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [case, url, messages] = args.as_slice() else {
        bail!("usage: icount <raw|bus|ids|stored>-<bytes> <nats-url> <messages>");
    };
    let (path, body) = case
        .split_once('-')
        .with_context(|| format!("case `{case}` is not <path>-<bytes>"))?;
    let path = match path {
        "raw" => Path::Raw,
        "bus" => Path::Bus,
        "ids" => Path::Ids,
        "stored" => Path::Stored,
        other => bail!("unknown path `{other}`"),
    };
    let body: usize = body.parse().context("body size")?;
    let messages: u64 = messages.parse().context("message count")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let received = runtime.block_on(async {
        if path == Path::Stored {
            return stored(url, body, messages).await;
        }
        run(url, path, body, (messages / 5).max(500), false).await?;
        run(url, path, body, messages, true).await
    })?;
    println!("received {received}");
    Ok(())
}

/// The envelope the bench sends: source, id and room headers, a string
/// body whose JSON encoding is `body` bytes.
fn envelope(body: usize) -> Envelope {
    let text: String = "the quick brown fox jumps over the lazy dog "
        .chars()
        .cycle()
        .take(body.saturating_sub(2))
        .collect();
    Envelope::new("irc-libera", serde_json::Value::String(text))
        .with_header(headers::ROOM, "#bench")
}

/// A new id of the same length, in place: the bus drops an id it has just
/// seen, and a fresh `Envelope` would count more than the publish path.
/// The counter's digits are kept by the caller and stepped by one (a
/// carry now and then), not formatted anew: this is the harness, whose
/// cost the publisher's count should carry as little of as it can.
fn restamp(envelope: &mut Envelope, digits: &mut [u8; 12]) {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            break;
        }
    }
    if let Some(id) = envelope.headers.get_mut(headers::ID) {
        id.truncate(10);
        id.push_str(std::str::from_utf8(digits).unwrap_or_default());
    }
}

fn bus_options(url: &str) -> BusOptions {
    BusOptions::new(url)
        .publish_buffer(CAPACITY)
        .subscription_capacity(CAPACITY)
}

async fn raw_connect(url: &str) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .client_capacity(CAPACITY)
        .subscription_capacity(CAPACITY)
        .connect(url)
        .await?)
}

struct Progress {
    received: AtomicU64,
    room: Notify,
}

/// One publisher and one subscriber on fresh connections; `count` brackets
/// the run with the markers. Returns the messages delivered.
async fn run(
    url: &str,
    path: Path,
    body: usize,
    messages: u64,
    count: bool,
) -> anyhow::Result<u64> {
    let progress = Arc::new(Progress {
        received: AtomicU64::new(0),
        room: Notify::new(),
    });
    let mut env = envelope(body);
    let mut digits = [b'0'; 12];
    let done = Arc::clone(&progress);
    let tally = move |n: u64| {
        done.received.store(n, Ordering::Release);
        if n % 256 == 0 || n == messages {
            done.room.notify_one();
        }
    };
    let (consumer, publisher): (tokio::task::JoinHandle<usize>, Publisher) = match path {
        Path::Raw => {
            let sub_client = raw_connect(url).await?;
            let client = raw_connect(url).await?;
            let mut sub = sub_client.subscribe(SUBJECT).await?;
            sub_client.flush().await?;
            sync_raw(&sub_client).await?;
            let consumer = tokio::spawn(async move {
                let (mut n, mut sum) = (0, 0usize);
                while n < messages {
                    let Some(m) = sub.next().await else { break };
                    sum = sum.wrapping_add(m.payload.len());
                    n += 1;
                    tally(n);
                }
                sum
            });
            (consumer, Publisher::Raw(client, Bytes::from(env.to_vec())))
        }
        Path::Bus | Path::Ids | Path::Stored => {
            let sub_bus = Bus::connect(&bus_options(url), "icount-sub").await?;
            let opts = bus_options(url).stream_ids(path == Path::Ids);
            let bus = Bus::connect(&opts, "icount-pub").await?;
            let mut sub = sub_bus.subscribe(&Pattern::parse(SUBJECT)?).await?;
            sub_bus.sync().await?;
            let consumer = tokio::spawn(async move {
                let (mut n, mut sum) = (0, 0usize);
                while n < messages {
                    let Some(d) = sub.next().await else { break };
                    sum = sum.wrapping_add(d.body_text().map_or(0, |t| t.len()));
                    n += 1;
                    tally(n);
                }
                sum
            });
            (consumer, Publisher::Bus(bus))
        }
    };
    if count {
        begin();
    }
    for n in 0..messages {
        while n - progress.received.load(Ordering::Acquire) >= WINDOW {
            let wait = progress.room.notified();
            if n - progress.received.load(Ordering::Acquire) < WINDOW {
                break;
            }
            if tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .is_err()
            {
                bail!("the consumer stalled at {n}");
            }
        }
        match &publisher {
            Publisher::Raw(client, payload) => client.publish(SUBJECT, payload.clone()).await?,
            Publisher::Bus(bus) => {
                restamp(&mut env, &mut digits);
                bus.publish(SUBJECT, &env).await?;
            }
        }
    }
    let checksum = tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .context("the consumer did not finish")??;
    if count {
        end();
    }
    std::hint::black_box(checksum);
    Ok(progress.received.load(Ordering::Acquire))
}

enum Publisher {
    Raw(async_nats::Client, Bytes),
    Bus(Bus),
}

/// A raw client's round trip through the server (its subscription is in
/// place after it).
async fn sync_raw(client: &async_nats::Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, Bytes::new()).await?;
    client.flush().await?;
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .context("no sync round trip")?;
    Ok(())
}

/// `Bus::publish_stored` one envelope at a time (each waits for the
/// stream's ack), after a warm-up.
async fn stored(url: &str, body: usize, messages: u64) -> anyhow::Result<u64> {
    let bus = Bus::connect(&bus_options(url), "icount-stored").await?;
    bus.ensure_stream(&StreamSpec {
        name: "ICOUNT".into(),
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 30,
        duplicate_window: Duration::from_secs(120),
        max_message_bytes: 0,
        replicas: 1,
    })
    .await?;
    let mut env = envelope(body);
    let mut digits = [b'0'; 12];
    let warm = (messages / 5).max(100);
    for _ in 0..warm {
        restamp(&mut env, &mut digits);
        bus.publish_stored(SUBJECT, &env).await?;
    }
    begin();
    for _ in 0..messages {
        restamp(&mut env, &mut digits);
        bus.publish_stored(SUBJECT, &env).await?;
    }
    end();
    Ok(messages)
}
