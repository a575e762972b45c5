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
