//! The quick fault scenarios, in `make test`: each must end as expected
//! (the whole suite with bigger loads is `make chaos`).

use switchboard_chaos as chaos;

async fn check(outcome: anyhow::Result<chaos::Outcome>) {
    let o = outcome.expect("the scenario ran");
    assert!(o.ok, "{}", o.row());
    if let Some(t) = &o.tally {
        assert!(t.answered > 0, "{}", o.row());
        if !o.at_most_once {
            assert_eq!(
                t.answered,
                t.sent,
                "a lossless path lost pings: {}",
                o.row()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sigkill() {
    check(chaos::operator_sigkill().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_sigkill() {
    check(chaos::nats_sigkill().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sigkill_and_restart() {
    check(chaos::daemon_sigkill().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_on_shutdown() {
    check(chaos::hang_on_shutdown().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_output() {
    check(chaos::flood_of_output(10).await).await;
}

/// Needs root (it mounts a small tmpfs), as CI has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_state_dir() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    check(chaos::full_state_dir().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_under_faults() {
    check(chaos::logger_under_faults().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_operator() {
    check(chaos::misbehaving_operator().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irc_server_restart() {
    check(chaos::irc_server_restart().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_relay_restart() {
    check(chaos::nostr_relay_restart().await).await;
}
