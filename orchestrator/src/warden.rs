//! The fence warden: the backstop that stops a cluster host's operators
//! when its daemon cannot.
//!
//! In cluster mode a host may run an operator only while its lease is
//! valid; the daemon's engine fences (stops everything) when it could not
//! renew in time, and peers take over only after the lease's TTL
//! (docs/cluster.md, "Leases: the arithmetic"). That argument needs the
//! daemon to *run* its fence. A daemon stopped by SIGSTOP, a deadlock or
//! uninterruptible I/O cannot, while its operators, separate processes,
//! go on acting: two hosts would run one operator.
//!
//! The warden is a second, tiny process (`switchboard fence-warden`,
//! hidden from `--help`) started by the daemon in a process group of its
//! own, so a signal to the daemon's group does not reach it. It holds no
//! NATS connection and shares no lock with the daemon. The daemon tells it,
//! one line at a time on its stdin:
//!
//! - `deadline <ns>`: every operator must be gone by this
//!   `CLOCK_MONOTONIC` instant (the engine's fence time plus its stop
//!   budget). Monotonic nanoseconds are the same clock in every process of
//!   one machine and do not jump with the wall clock.
//! - `clear`: no deadline (nothing may be killed for lack of one: the
//!   daemon sends it only when no operator is lease-bound).
//! - `watch <group>` / `forget <group>`: an operator's process group (in a
//!   sandbox, the group of its pid-namespace init, whose death takes the
//!   whole namespace down) was started / has been reaped.
//! - `quit`: a clean shutdown; exit without killing anything.
//!
//! Its one action: when the deadline has passed (checked every
//! [`CHECK`]), or its stdin reaches end of file without `quit` (the daemon
//! died), it SIGKILLs every watched group. A group watched while the
//! deadline has passed is killed at once. Kill, not freeze: a thawed
//! operator would act on a lease a peer already holds.
//!
//! The arithmetic is unchanged by it: the daemon's own fence still runs
//! first (SIGTERM at the fence time), and the warden's deadline is the
//! moment the operators must be gone by in any case, so a normal fence
//! leaves it nothing to kill.
//!
//! Left open (said in docs/cluster.md): the daemon and the warden both
//! frozen (two faults); a process that left its operator's group outside
//! a sandbox (the sandbox's pid namespace covers it).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;

/// How often the warden looks at the clock: part of the timer lateness
/// the lease's skew margin absorbs (as the engine's own fence check).
pub const CHECK: Duration = Duration::from_millis(20);

/// One line from the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Everything watched must be gone by this `CLOCK_MONOTONIC` instant
    /// (nanoseconds).
    Deadline(u64),
    /// No deadline.
    Clear,
    /// Kill this process group when the deadline passes.
    Watch(u32),
    /// This group is gone; never signal it again.
    Forget(u32),
    /// Exit without killing anything.
    Quit,
}

/// A line the warden does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a warden order: `{line}` (expected deadline <ns>, clear, watch <group>, forget <group> or quit)")]
pub struct OrderError {
    /// The line, as read (it carries no secret: numbers and verbs only).
    pub line: String,
}

impl OrderError {
    /// The only kind: a line that is not an order.
    pub fn kind(&self) -> OrderErrorKind {
        OrderErrorKind::Malformed
    }
}

/// The kinds of [`OrderError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderErrorKind {
    /// A line that is not an order.
    Malformed,
}

impl Order {
    /// Parse one line.
    ///
    /// # Errors
    ///
    /// When it is not one of the orders above.
    pub fn parse(line: &str) -> Result<Order, OrderError> {
        let bad = || OrderError {
            line: line.chars().take(80).collect(),
        };
        let mut words = line.split_ascii_whitespace();
        let order = match (words.next(), words.next()) {
            (Some("deadline"), Some(ns)) => Order::Deadline(ns.parse().map_err(|_| bad())?),
            (Some("watch"), Some(g)) => Order::Watch(group(g).ok_or_else(bad)?),
            (Some("forget"), Some(g)) => Order::Forget(group(g).ok_or_else(bad)?),
            (Some("clear"), None) => Order::Clear,
            (Some("quit"), None) => Order::Quit,
            _ => return Err(bad()),
        };
        match words.next() {
            None => Ok(order),
            Some(_) => Err(bad()),
        }
    }
}

/// A process group id: positive, and never 1 (`killpg(1)` would be
/// init's group).
fn group(text: &str) -> Option<u32> {
    text.parse()
        .ok()
        .filter(|g| *g > 1 && *g <= i32::MAX as u32)
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Order::Deadline(ns) => write!(f, "deadline {ns}"),
            Order::Clear => f.write_str("clear"),
            Order::Watch(g) => write!(f, "watch {g}"),
            Order::Forget(g) => write!(f, "forget {g}"),
            Order::Quit => f.write_str("quit"),
        }
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn monotonic_now() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64),
        // Cannot fail for this clock on Linux; 0 would make every
        // deadline look future, so fail towards "passed" instead.
        Err(_) => u64::MAX,
    }
}

/// An [`Instant`] as `CLOCK_MONOTONIC` nanoseconds (std's `Instant` is
/// that clock on Linux, but does not expose its value).
pub fn monotonic_of(at: Instant) -> u64 {
    let (now, ns) = (Instant::now(), monotonic_now());
    match at.checked_duration_since(now) {
        Some(ahead) => ns.saturating_add(ahead.as_nanos() as u64),
        None => ns.saturating_sub(now.duration_since(at).as_nanos() as u64),
    }
}

/// What the warden knows: the decision, apart from its I/O.
#[derive(Debug, Default)]
pub struct Watch {
    deadline: Option<u64>,
    groups: BTreeSet<u32>,
}

/// What [`Watch`] wants done after an order or a clock check.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// SIGKILL these groups (they are forgotten now).
    Kill(Vec<u32>),
    /// Exit.
    Exit,
}

impl Watch {
    /// Apply an order at monotonic time `now`.
    pub fn order(&mut self, order: Order, now: u64) -> Action {
        match order {
            Order::Deadline(ns) => self.deadline = Some(ns),
            Order::Clear => self.deadline = None,
            Order::Watch(g) => {
                self.groups.insert(g);
            }
            Order::Forget(g) => {
                self.groups.remove(&g);
            }
            Order::Quit => return Action::Exit,
        }
        self.check(now)
    }

    /// At monotonic time `now`: kill everything if the deadline passed.
    pub fn check(&mut self, now: u64) -> Action {
        match self.deadline {
            Some(d) if now >= d && !self.groups.is_empty() => self.kill_all(),
            _ => Action::None,
        }
    }

    /// The daemon is gone: kill everything it left.
    pub fn orphaned(&mut self) -> Action {
        self.kill_all()
    }

    fn kill_all(&mut self) -> Action {
        Action::Kill(std::mem::take(&mut self.groups).into_iter().collect())
    }
}

/// The warden process: read orders from stdin until `quit` or end of
/// file, kill as [`Watch`] decides. Returns when it should exit.
pub fn serve(input: impl BufRead + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in input.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        // Dropping `tx` tells the loop the daemon is gone.
    });
    let mut watch = Watch::default();
    loop {
        let action = match rx.recv_timeout(CHECK) {
            Ok(line) => match Order::parse(&line) {
                Ok(order) => watch.order(order, monotonic_now()),
                Err(e) => {
                    tracing::warn!(error = %e, "fence warden: ignored a line");
                    Action::None
                }
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => watch.check(monotonic_now()),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let action = watch.orphaned();
                if let Action::Kill(groups) = &action {
                    kill(groups, "the daemon is gone");
                }
                return;
            }
        };
        match action {
            Action::None => {}
            Action::Kill(groups) => kill(&groups, "the lease deadline passed"),
            Action::Exit => return,
        }
    }
}

fn kill(groups: &[u32], why: &str) {
    for g in groups {
        // ESRCH: already gone, the normal case after the daemon's fence.
        let _ = killpg(Pid::from_raw(*g as i32), Signal::SIGKILL);
    }
    tracing::error!(
        operators = groups.len(),
        "fence warden: {why}; killed the operators' process groups so no peer runs them twice"
    );
}

/// Why the warden could not be started or told something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WardenError {
    /// `switchboard fence-warden` could not be started.
    #[error("cannot start the fence warden ({program}): {source}")]
    Spawn {
        /// The program (this executable).
        program: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its pipe is closed (it died).
    #[error("the fence warden is gone: {0}")]
    Gone(#[source] std::io::Error),
}

/// The kinds of [`WardenError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WardenErrorKind {
    /// [`WardenError::Spawn`].
    Spawn,
    /// [`WardenError::Gone`].
    Gone,
}

impl WardenError {
    /// What kind of failure.
    pub fn kind(&self) -> WardenErrorKind {
        match self {
            WardenError::Spawn { .. } => WardenErrorKind::Spawn,
            WardenError::Gone(_) => WardenErrorKind::Gone,
        }
    }
}

/// The daemon's side: a running warden and the pipe to it.
#[derive(Debug)]
pub struct Warden {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

impl Warden {
    /// Start `<program> fence-warden` in a process group of its own, its
    /// stderr shared with the daemon's (so its one line lands in the
    /// daemon's log).
    ///
    /// # Errors
    ///
    /// When it cannot be started.
    pub fn spawn(program: &Path) -> Result<Warden, WardenError> {
        let spawn = |source| WardenError::Spawn {
            program: program.to_owned(),
            source,
        };
        let mut child = tokio::process::Command::new(program)
            .arg("fence-warden")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(spawn)?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| spawn(std::io::Error::other("no stdin pipe")))?;
        Ok(Warden { child, stdin })
    }

    /// Its pid (for tests and `status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Send one order.
    ///
    /// # Errors
    ///
    /// When the warden is gone.
    pub async fn send(&mut self, order: Order) -> Result<(), WardenError> {
        let line = format!("{order}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(WardenError::Gone)?;
        self.stdin.flush().await.map_err(WardenError::Gone)
    }

    /// Everything must be gone by `at`.
    ///
    /// # Errors
    ///
    /// When the warden is gone.
    pub async fn deadline(&mut self, at: Instant) -> Result<(), WardenError> {
        self.send(Order::Deadline(monotonic_of(at))).await
    }

    /// A clean shutdown: tell it to exit without killing, and reap it.
    pub async fn quit(mut self) {
        let _ = self.send(Order::Quit).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
        let _ = self.child.start_kill();
    }
}

/// The daemon's handle on its warden.
///
/// Orders go through a channel to one task that owns the process, so a
/// supervisor actor never waits on it and orders keep their order: a
/// deadline sent before a start reaches the warden before that start's
/// `watch`. If the warden dies, the task starts a new one (at most once a
/// second) and tells it the current deadline and every watched group.
#[derive(Debug, Clone)]
pub struct WardenLink {
    tx: tokio::sync::mpsc::UnboundedSender<Message>,
}

#[derive(Debug)]
enum Message {
    Deadline(Option<Instant>),
    Watch { id: String, groups: Vec<u32> },
    Forget { id: String },
    Quit(tokio::sync::oneshot::Sender<()>),
}

impl WardenLink {
    /// Start the warden (`<program> fence-warden`) and the task that
    /// talks to it. Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// When the first warden cannot be started.
    pub fn start(program: &Path) -> Result<WardenLink, WardenError> {
        let warden = Warden::spawn(program)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(keep(warden, program.to_owned(), rx));
        Ok(WardenLink { tx })
    }

    /// Every watched group must be gone by `at` (`None`: no deadline).
    pub fn deadline(&self, at: Option<Instant>) {
        let _ = self.tx.send(Message::Deadline(at));
    }

    /// Operator `id` runs as these process groups (replacing what was
    /// watched for it before).
    pub fn watch(&self, id: &str, groups: &[u32]) {
        let _ = self.tx.send(Message::Watch {
            id: id.to_owned(),
            groups: groups.to_vec(),
        });
    }

    /// Operator `id`'s processes are gone.
    pub fn forget(&self, id: &str) {
        let _ = self.tx.send(Message::Forget { id: id.to_owned() });
    }

    /// A clean shutdown: the warden exits without killing anything.
    pub async fn quit(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Message::Quit(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// The task behind [`WardenLink`].
async fn keep(
    warden: Warden,
    program: std::path::PathBuf,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Message>,
) {
    let mut warden = Some(warden);
    let mut last_spawn = Instant::now();
    let mut deadline: Option<Instant> = None;
    let mut watched: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
    while let Some(message) = rx.recv().await {
        let orders: Vec<Order> = match message {
            Message::Deadline(at) => {
                deadline = at;
                vec![deadline_order(deadline)]
            }
            Message::Watch { id, groups } => {
                let mut orders: Vec<Order> = watched
                    .remove(&id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Order::Forget)
                    .collect();
                orders.extend(groups.iter().map(|g| Order::Watch(*g)));
                watched.insert(id, groups);
                orders
            }
            Message::Forget { id } => watched
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .map(Order::Forget)
                .collect(),
            Message::Quit(done) => {
                if let Some(w) = warden.take() {
                    w.quit().await;
                }
                let _ = done.send(());
                return;
            }
        };
        if let Some(w) = warden.as_mut() {
            let mut gone = None;
            for order in orders {
                if let Err(e) = w.send(order).await {
                    gone = Some(e);
                    break;
                }
            }
            match gone {
                None => continue,
                Some(e) => {
                    tracing::error!(error = %e, "fence warden lost; starting a new one");
                    warden = None;
                }
            }
        }
        // No warden: start one (not more than once a second) and tell it
        // everything it must know.
        if last_spawn.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_spawn = Instant::now();
        match Warden::spawn(&program) {
            Ok(mut w) => {
                let mut replay = vec![deadline_order(deadline)];
                replay.extend(watched.values().flatten().map(|g| Order::Watch(*g)));
                let mut ok = true;
                for order in replay {
                    ok = ok && w.send(order).await.is_ok();
                }
                if ok {
                    warden = Some(w);
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                "no fence warden: a frozen daemon would leave its operators running"
            ),
        }
    }
    // Every link dropped without `quit`: dropping the warden closes its
    // stdin, and it ends what it watches.
}

fn deadline_order(at: Option<Instant>) -> Order {
    at.map_or(Order::Clear, |at| Order::Deadline(monotonic_of(at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_round_trip_and_bad_lines_are_refused() {
        for o in [
            Order::Deadline(12_345_678_901),
            Order::Clear,
            Order::Watch(4242),
            Order::Forget(4242),
            Order::Quit,
        ] {
            assert_eq!(Order::parse(&o.to_string()), Ok(o));
        }
        for bad in [
            "",
            "deadline",
            "deadline soon",
            "watch 1",
            "watch 0",
            "watch -5",
            "watch 99999999999",
            "quit now",
            "kill 5",
        ] {
            let e = Order::parse(bad).unwrap_err();
            assert_eq!(e.kind(), OrderErrorKind::Malformed, "{bad}");
        }
    }

    #[test]
    fn kills_only_once_the_deadline_has_passed() {
        let mut w = Watch::default();
        assert_eq!(
            w.order(Order::Watch(10), 0),
            Action::None,
            "no deadline yet"
        );
        assert_eq!(w.order(Order::Deadline(1_000), 0), Action::None);
        assert_eq!(w.check(999), Action::None);
        assert_eq!(
            w.order(Order::Deadline(2_000), 999),
            Action::None,
            "renewed"
        );
        assert_eq!(w.check(1_500), Action::None);
        assert_eq!(w.order(Order::Watch(11), 1_600), Action::None);
        assert_eq!(w.order(Order::Forget(10), 1_700), Action::None);
        assert_eq!(w.check(2_000), Action::Kill(vec![11]));
        assert_eq!(w.check(2_100), Action::None, "nothing left to kill");
        // A group started while the deadline has passed dies at once.
        assert_eq!(w.order(Order::Watch(12), 2_200), Action::Kill(vec![12]));
        // `clear`: nothing is lease-bound, nothing is killed.
        assert_eq!(w.order(Order::Clear, 2_300), Action::None);
        assert_eq!(w.order(Order::Watch(13), 2_400), Action::None);
        assert_eq!(w.orphaned(), Action::Kill(vec![13]));
        assert_eq!(w.order(Order::Quit, 2_500), Action::Exit);
    }

    #[test]
    fn instants_map_onto_the_monotonic_clock() {
        let now = Instant::now();
        let a = monotonic_of(now + Duration::from_secs(2));
        let b = monotonic_now();
        let ahead = a.saturating_sub(b);
        assert!(
            (1_900_000_000..=2_000_000_000).contains(&ahead),
            "{ahead} ns ahead"
        );
        let past = monotonic_of(now - Duration::from_millis(1));
        assert!(past < monotonic_now());
    }
}
