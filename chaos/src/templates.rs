//! The manifests the scenarios run: the ping bot, the logger and the
//! misbehaving Python operator, each with fast health timings.

/// A ping bot manifest with quick health timings, and no answer limits:
/// the scenarios count on every ping being answered (the limits are
/// tested in the orchestrator's `trust` tests).
pub fn pingbot(id: &str) -> String {
    format!(
        "id = \"{id}\"\ncommand = {:?}\nheartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\n\
         ready_timeout = \"5s\"\nstop_timeout = \"2s\"\nrestart = \"always\"\n\
         [backoff]\ninitial = \"10ms\"\nreset_after = \"100ms\"\n\
         [config.rate]\nsender = \"off\"\nroom = \"off\"\nnetwork = \"off\"\n",
        switchboard_testkit::bin_path("switchboard-pingbot")
    )
}

/// A logger manifest writing under `dir` (writable in its sandbox), with
/// fast health timings.
pub fn logger(dir: &std::path::Path) -> String {
    format!(
        "id = \"logger\"\ncommand = {:?}\npublish = []\nsubscribe = []\nstream = [\"consume\"]\n\
         heartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\nrestart = \"always\"\n\
         sandbox_binds_rw = [{:?}]\n\
         [backoff]\ninitial = \"10ms\"\nreset_after = \"100ms\"\n[config]\ndir = {:?}\n",
        switchboard_testkit::bin_path("switchboard-logger"),
        dir,
        dir
    )
}

/// The misbehaving Python operator (chaos/operators/misbehaving.py) with
/// fast health timings; needs `make tools` (nats-py in .tools/venv).
pub fn misbehaving(id: &str) -> String {
    let root = switchboard_testkit::workspace_root();
    format!(
        "id = \"{id}\"\ncommand = {:?}\nargs = [{:?}]\nheartbeat_interval = \"100ms\"\n\
         missed_heartbeats = 3\nready_timeout = \"10s\"\nstop_timeout = \"1s\"\n",
        root.join(".tools/venv/bin/python"),
        root.join("chaos/operators/misbehaving.py"),
    )
}
