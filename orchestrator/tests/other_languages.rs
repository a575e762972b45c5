//! The operators in other languages under a real `switchboard run`:
//! `operators/shell-echo/echo.sh` (bash and the switchboard CLI, no NATS
//! client of its own, `control = "signals"`) and `operators/ts-echo`
//! (TypeScript: `echo.ts` on sdk/typescript, `wire-echo.ts` on nats.js
//! alone). Each answers in the room, and a reload (SIGHUP with the
//! rewritten config file, or the `reload` verb) changes what it answers
//! to. Their conformance is in tests/conformance.rs.

mod common;

use common::*;
use serde_json::json;
use switchboard_bus::Envelope;
use switchboard_proto::{ChatAddress, Verb};

fn manifest() -> String {
    let script = switchboard_testkit::workspace_root().join("operators/shell-echo/echo.sh");
    format!(
        "id = \"sh\"\ncommand = \"bash\"\nargs = [{:?}]\ncontrol = \"signals\"\n\
         subscribe = [\"chat.*.*.*.message\"]\npublish = [\"send.*.*.*.message\"]\n\
         stop_timeout = \"5s\"\n\n[env]\nSB_CLI = {:?}\n\n[config]\nprefix = \"!sh \"\n",
        path_str(&script),
        env!("CARGO_BIN_EXE_switchboard"),
    )
}

async fn say(d: &Daemon, text: &str) {
    let room = ChatAddress::new("t", "x", "#room");
    let env = Envelope::new(
        "x", // the instance's own operator (PROTOCOL.md, "Authentic source")
        json!({"text": text, "sender": "ferris", "room": "#room", "private": false}),
    );
    d.bus
        .publish(&room.event_subject("message"), &env)
        .await
        .unwrap();
}

/// Say `text` every 200 ms until a reply comes (the operator's `tail`
/// subscribes a moment after its process starts); the reply's text.
async fn answer(
    d: &Daemon,
    sub: &mut switchboard_bus::RawSubscription,
    id: &str,
    text: &str,
) -> String {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        say(d, text).await;
        if let Ok(Some(m)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), sub.next()).await
        {
            assert_eq!(m.subject, "send.t.x.=23room.message");
            let env = Envelope::from_slice(&m.payload).expect("a valid envelope");
            assert_eq!(env.source, id);
            return env.body["text"].as_str().expect("a text").to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer to {text:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_operator_answers_and_reloads() {
    let d = Daemon::start(&[("sh.toml", manifest())]).await;
    d.wait_running("sh").await;
    let mut sub = d.bus.subscribe_raw("send.t.x.*.message").await.unwrap();
    d.bus.sync().await.unwrap();
    assert_eq!(
        answer(&d, &mut sub, "sh", "!sh hello \"world\"").await,
        "hello \"world\""
    );

    let reply = d
        .ctl(Verb::Reload, "sh", Some(json!({"prefix": "!bash "})))
        .await;
    assert!(reply.error.is_none(), "{reply:?}");
    assert_eq!(answer(&d, &mut sub, "sh", "!bash again").await, "again");
}

/// The TypeScript echo operator answers and reloads; `js` runs it, with
/// `env` for its manifest.
async fn typescript_answers_and_reloads(js: &std::path::Path, env: &str) {
    let manifest = format!(
        "id = \"ts\"\ncommand = \"node\"\nargs = [{:?}]\n\
         subscribe = [\"chat.*.*.*.message\"]\npublish = [\"send.*.*.*.message\"]\n\n\
         [env]\n{env}\n\n[config]\nprefix = \"!ts \"\n",
        path_str(js),
    );
    let d = Daemon::start(&[("ts.toml", manifest)]).await;
    d.wait_running("ts").await;
    let mut sub = d.bus.subscribe_raw("send.t.x.*.message").await.unwrap();
    d.bus.sync().await.unwrap();
    assert_eq!(answer(&d, &mut sub, "ts", "!ts hello").await, "hello");

    let reply = d
        .ctl(Verb::Reload, "ts", Some(json!({"prefix": "!node "})))
        .await;
    assert!(reply.results.iter().all(|r| r.ok), "{reply:?}");
    assert_eq!(answer(&d, &mut sub, "ts", "!node again").await, "again");
    // A config it refuses: the old one stays.
    let reply = d
        .ctl(Verb::Reload, "ts", Some(json!({"prefx": "!x "})))
        .await;
    assert!(reply.results.iter().all(|r| !r.ok), "{reply:?}");
    assert_eq!(answer(&d, &mut sub, "ts", "!node still").await, "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_operator_answers_and_reloads() {
    let root = switchboard_testkit::workspace_root();
    let project = ts_project(&root.join("operators/ts-echo/echo.ts"));
    typescript_answers_and_reloads(&project.join("echo.js"), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_wire_example_answers_and_reloads() {
    let root = switchboard_testkit::workspace_root();
    let modules = root.join(".tools/ts-echo/node_modules");
    assert!(
        modules.join("typescript").is_dir(),
        "{} lacks typescript: run `make tools`",
        modules.display()
    );
    let out = tempfile::tempdir().unwrap();
    let tsc = std::process::Command::new("node")
        .arg(modules.join("typescript/bin/tsc"))
        .arg("-p")
        .arg(root.join("operators/ts-echo/tsconfig.wire.json"))
        .arg("--outDir")
        .arg(out.path())
        .output()
        .expect("run node (Node 20 or later)");
    assert!(
        tsc.status.success(),
        "tsc: {}",
        String::from_utf8_lossy(&tsc.stdout)
    );
    let env = format!("NODE_PATH = {:?}", path_str(&modules));
    typescript_answers_and_reloads(&out.path().join("wire-echo.js"), &env).await;
}
