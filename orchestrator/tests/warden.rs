//! The fence warden as a real process (`switchboard fence-warden`)
//! against real process groups: what it kills, when, and what it leaves.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use switchboard_orchestrator::warden::{Order, Warden};

/// A `sleep` in a process group of its own, as an operator runs; killed
/// on drop if a test fails before the warden does.
struct Victim(Child);

impl Victim {
    fn start() -> Victim {
        use std::os::unix::process::CommandExt;
        Victim(
            Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .expect("sleep"),
        )
    }
    fn group(&self) -> u32 {
        self.0.id()
    }
    /// Whether it has exited (reaped here, so a dead one is not a zombie).
    fn gone(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
    /// Wait up to `within` for it to exit; how long that took.
    async fn gone_within(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.gone() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn warden() -> Warden {
    Warden::spawn(env!("CARGO_BIN_EXE_switchboard").as_ref()).expect("spawn the warden")
}

#[tokio::test]
async fn a_passed_deadline_kills_the_watched_groups_and_nothing_else() {
    let mut w = warden();
    let (mut watched, mut bystander) = (Victim::start(), Victim::start());
    let deadline = Instant::now() + Duration::from_millis(400);
    w.deadline(deadline).await.unwrap();
    w.send(Order::Watch(watched.group())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!watched.gone(), "killed before its deadline");
    let took = watched
        .gone_within(Duration::from_secs(3))
        .await
        .expect("the warden kills the group once the deadline passes");
    let late = Instant::now().saturating_duration_since(deadline);
    println!("killed {late:?} after the deadline ({took:?} after the check began)");
    assert!(
        late < Duration::from_millis(300),
        "killed {late:?} after the deadline"
    );
    assert!(!bystander.gone(), "an unwatched group was killed");
    w.quit().await;
}

#[tokio::test]
async fn renewed_deadlines_keep_operators_alive_and_forgotten_groups_are_spared() {
    let mut w = warden();
    let (mut kept, mut forgotten) = (Victim::start(), Victim::start());
    w.send(Order::Watch(kept.group())).await.unwrap();
    w.send(Order::Watch(forgotten.group())).await.unwrap();
    // Renewals every 100 ms, each 300 ms ahead: never passed.
    for _ in 0..8 {
        w.deadline(Instant::now() + Duration::from_millis(300))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!kept.gone() && !forgotten.gone(), "killed while renewed");
    // Renewals stop; the forgotten one is spared, the other dies.
    w.send(Order::Forget(forgotten.group())).await.unwrap();
    assert!(kept.gone_within(Duration::from_secs(2)).await.is_some());
    assert!(!forgotten.gone(), "a forgotten group was killed");
    // A group watched while the deadline has passed dies at once.
    let mut late = Victim::start();
    w.send(Order::Watch(late.group())).await.unwrap();
    assert!(late.gone_within(Duration::from_millis(500)).await.is_some());
    w.quit().await;
}

#[tokio::test]
async fn a_dead_daemon_leaves_nothing_running_but_a_clean_quit_kills_nothing() {
    // The daemon's end of the pipe closes (it was SIGKILLed): the warden
    // kills what it watched, deadline or not.
    let mut w = warden();
    let pid = w.pid().unwrap();
    let mut orphan = Victim::start();
    w.send(Order::Clear).await.unwrap();
    w.send(Order::Watch(orphan.group())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!orphan.gone(), "no deadline: nothing to kill yet");
    drop(w);
    assert!(orphan.gone_within(Duration::from_secs(2)).await.is_some());
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
    };
    let start = Instant::now();
    while !exited() && start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(exited(), "the warden exits with its daemon");

    // `quit`: a clean shutdown leaves operators alone (the daemon stops
    // them itself).
    let mut w = warden();
    let mut spared = Victim::start();
    w.send(Order::Watch(spared.group())).await.unwrap();
    w.quit().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!spared.gone());
}
