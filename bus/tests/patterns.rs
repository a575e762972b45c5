//! Patterns deliver exactly the matching subjects, each once, through a
//! real nats-server.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use switchboard_bus::{Bus, BusOptions, Envelope, Pattern};
use switchboard_testkit::NatsServer;

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

fn random_subjects(n: usize) -> Vec<String> {
    let mut rng = Lcg(0x5eed);
    let first = ["chat", "send", "sb", "x"];
    let rest = ["chat", "irc", "nostr", "x", "y", "message"];
    (0..n)
        .map(|_| {
            let len = 1 + (rng.next() as usize % 6);
            let mut tokens = vec![rng.pick(&first)];
            for _ in 1..len {
                tokens.push(rng.pick(&rest));
            }
            tokens.join(".")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pattern_delivers_exactly_its_subjects_once() {
    let server = NatsServer::start().expect("nats-server");
    let opts = BusOptions::new(&server.url());
    let publisher = Bus::connect(&opts, "pub").await.unwrap();
    let listener = Bus::connect(&opts, "sub").await.unwrap();

    let patterns = ["#", "chat.#", "chat.*.x", "chat.irc.#.chat", "#.chat"];
    let mut subs = Vec::new();
    for p in patterns {
        let pattern = Pattern::parse(p).unwrap();
        subs.push((pattern.clone(), listener.subscribe(&pattern).await.unwrap()));
    }
    listener.sync().await.unwrap();

    let subjects = random_subjects(10_000);
    let mut ids: HashMap<String, String> = HashMap::new();
    for s in &subjects {
        let env = Envelope::new("pub", serde_json::json!({"s": s}));
        ids.insert(env.id().unwrap().to_string(), s.clone());
        publisher.publish(s, &env).await.unwrap();
    }
    publisher.flush().await.unwrap();

    for (pattern, mut sub) in subs {
        let expected: Vec<&String> = subjects.iter().filter(|s| pattern.matches(s)).collect();
        assert!(!expected.is_empty(), "{pattern} should match something");
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{pattern}: timed out after {} of {}",
                        got.len(),
                        expected.len()
                    )
                })
                .expect("stream open");
            assert!(
                pattern.matches(&d.subject),
                "{pattern} delivered {}",
                d.subject
            );
            // The envelope is the one published on that subject.
            let id = d.envelope().id().unwrap();
            assert_eq!(
                ids.get(id),
                Some(&d.subject),
                "{pattern}: envelope/subject mismatch"
            );
            got.push(d.subject);
        }
        // Nothing more may come: no duplicate, no stray subject.
        let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
        assert!(
            extra.is_err(),
            "{pattern}: unexpected extra delivery {extra:?}"
        );
        // Same multiset. (Order holds per NATS subscription, not across
        // the two that `chat.#` needs, so compare sorted.)
        let mut expected: Vec<String> = expected.into_iter().cloned().collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "{pattern}: deliveries");
    }
    assert_eq!(listener.stats().snapshot().duplicates, 0);
}

#[tokio::test]
async fn overlapping_subscriptions_on_one_stream_are_deduplicated() {
    // Two clients publishing the same envelope (a relay re-broadcast) must
    // reach a subscriber once.
    let server = NatsServer::start().expect("nats-server");
    let opts = BusOptions::new(&server.url());
    let a = Bus::connect(&opts, "a").await.unwrap();
    let b = Bus::connect(&opts, "b").await.unwrap();
    let listener = Bus::connect(&opts, "l").await.unwrap();
    let mut sub = listener
        .subscribe(&Pattern::parse("chat.#").unwrap())
        .await
        .unwrap();
    listener.sync().await.unwrap();
    let env = Envelope::new("a", serde_json::json!({"text": "once"}));
    a.publish("chat.x", &env).await.unwrap();
    a.sync().await.unwrap();
    b.publish("chat.x", &env).await.unwrap();
    let other = Envelope::new("b", serde_json::json!({"text": "after"}));
    b.publish("chat.x", &other).await.unwrap();
    b.flush().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.envelope(), &env);
    let second = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.envelope(), &other, "the duplicate must be skipped");
    assert_eq!(listener.stats().snapshot().duplicates, 1);
}

/// A pattern of 1 to 5 tokens over `a b c`, `*` and `#` (literals, `*`,
/// leading, middle and trailing `#`).
fn random_pattern(rng: &mut Lcg) -> Pattern {
    loop {
        let len = 1 + (rng.next() as usize % 5);
        let tokens: Vec<&str> = (0..len)
            .map(|_| rng.pick(&["a", "b", "c", "*", "#"]))
            .collect();
        // Adjacent `#` collapse into one; keep the text as written.
        if let Ok(p) = Pattern::parse(&tokens.join(".")) {
            return p;
        }
    }
}

/// What a bridge or a logger sees after a reconnect: one subscriber with
/// 400 varied patterns, one publisher sending a burst of 3,000 envelopes
/// on keys of 1 to 5 tokens. Every (pattern, envelope) pair that
/// `Pattern::matches` says should meet arrives exactly once, and the
/// subscriber is never cut off by the server as a slow consumer (issue
/// 21: it lost about half, `reconnects: 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_400_patterns_arrives_exactly_once() {
    const PATTERNS: usize = 400;
    const ENVELOPES: usize = 3_000;
    let server = NatsServer::start().expect("nats-server");
    let opts = BusOptions::new(&server.url());
    let publisher = Bus::connect(&opts, "pub").await.unwrap();
    let listener = Bus::connect(&opts, "sub").await.unwrap();

    let mut rng = Lcg(0xb0b5);
    let patterns: Vec<Pattern> = (0..PATTERNS).map(|_| random_pattern(&mut rng)).collect();
    let keys: Vec<String> = (0..ENVELOPES)
        .map(|_| {
            let len = 1 + (rng.next() as usize % 5);
            (0..len)
                .map(|_| rng.pick(&["a", "b", "c"]))
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    let expected: Vec<usize> = patterns
        .iter()
        .map(|p| keys.iter().filter(|k| p.matches(k)).count())
        .collect();
    let total: usize = expected.iter().sum();
    assert!(total > 150_000, "the burst should be large: {total}");

    let mut tasks = Vec::new();
    for (pattern, want) in patterns.iter().zip(&expected) {
        let mut sub = listener.subscribe(pattern).await.unwrap();
        let (pattern, want) = (pattern.clone(), *want);
        tasks.push(tokio::spawn(async move {
            let mut got: HashMap<String, (String, u32)> = HashMap::with_capacity(want);
            let mut n = 0;
            // Until every expected delivery came, then a short wait for
            // anything extra (a repeat, a stray subject).
            loop {
                let wait = if n < want { 30 } else { 0 };
                let next = tokio::time::timeout(
                    Duration::from_millis(300) + Duration::from_secs(wait),
                    sub.next(),
                )
                .await;
                let Ok(Some(d)) = next else { break };
                n += 1;
                let id = d.id().unwrap_or_default().to_string();
                got.entry(id).or_insert((d.subject.clone(), 0)).1 += 1;
            }
            (pattern, want, n, got)
        }));
    }
    listener.sync().await.unwrap();

    let mut ids: HashMap<String, String> = HashMap::with_capacity(ENVELOPES);
    for key in &keys {
        // A chat line of a few hundred bytes, as a bridge relays them.
        let text = format!("{key} {}", "burst ".repeat(60));
        let env = Envelope::new("pub", serde_json::json!({"text": text, "key": key}));
        ids.insert(env.id().unwrap().to_string(), key.clone());
        publisher.publish(key, &env).await.unwrap();
    }
    publisher.flush().await.unwrap();

    let mut delivered = 0;
    let mut problems = Vec::new();
    for task in tasks {
        let (pattern, want, n, got) = task.await.unwrap();
        delivered += n;
        let mut wrong = 0;
        for (id, (subject, count)) in &got {
            let sent_on = ids.get(id);
            if *count != 1 || sent_on != Some(subject) || !pattern.matches(subject) {
                wrong += 1;
            }
        }
        if n != want || got.len() != want || wrong > 0 {
            problems.push(format!(
                "{pattern}: {n} deliveries of {} envelopes, expected {want}, {wrong} wrong",
                got.len()
            ));
        }
    }
    let stats = listener.stats().snapshot();
    if !problems.is_empty() {
        eprintln!("server log:\n{}", server.log());
    }
    assert!(
        problems.is_empty(),
        "{delivered} of {total} deliveries; {} patterns wrong, e.g. {:?}; counters {stats:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert_eq!(delivered, total);
    assert_eq!(
        (
            stats.reconnects,
            stats.dropped,
            stats.malformed,
            stats.duplicates
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
}
