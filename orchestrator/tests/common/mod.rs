//! What the orchestrator's end-to-end tests share beyond the testkit's
//! daemon harness (re-exported here): the ping bot's manifest, and the
//! Python and TypeScript toolchains for the SDK tests.

#![allow(dead_code, unused_imports)] // each test file uses a different part

pub mod cluster;

use std::path::{Path, PathBuf};

pub use switchboard_testkit::daemon::{
    alive, gone, next_json, Daemon, DaemonConfig, Embedded, External, WAIT,
};

pub fn pingbot() -> String {
    switchboard_testkit::bin_path("switchboard-pingbot")
        .display()
        .to_string()
}

/// A manifest for the ping bot with fast health timings.
pub fn pingbot_manifest(id: &str) -> String {
    format!(
        "id = \"{id}\"\ncommand = \"{}\"\nheartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\nready_timeout = \"5s\"\nstop_timeout = \"2s\"\n",
        pingbot()
    )
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The project's Python with nats-py (`make tools`): fail, never skip.
pub fn venv_python() -> PathBuf {
    let python = switchboard_testkit::workspace_root().join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make tools` (it installs nats-py into .tools/venv)",
        python.display()
    );
    python
}

/// The Python SDK's sources, for PYTHONPATH (a user would `pip install` it).
pub fn python_sdk() -> PathBuf {
    switchboard_testkit::workspace_root().join("sdk/python/src")
}

/// A Node project as `npm install switchboard-sdk` would leave a
/// user's: `bot` (a `.ts` file) compiled to `<dir>/<stem>.js`, the SDK
/// compiled beside it as `node_modules/switchboard-sdk`, nats.js linked
/// from `make tools`. One `tsc` run builds both (it costs seconds of CPU),
/// into `target/ts-projects/<stem>-<hash of the sources>`, made once and
/// renamed into place whole: tests running at once, or later, share it
/// and never read a half-written file; an edited source gets a new one.
pub fn ts_project(bot: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let root = switchboard_testkit::workspace_root();
    let modules = root.join("sdk/typescript/node_modules");
    assert!(
        modules.join("typescript").is_dir() && modules.join("nats").is_dir(),
        "{} lacks typescript or nats: run `make tools`",
        modules.display()
    );
    let sdk_src = root.join("sdk/typescript/src");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&sdk_src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ts"))
        .collect();
    sources.sort();
    sources.push(bot.to_owned());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for s in sources
        .iter()
        .chain([&root.join("sdk/typescript/package.json")])
    {
        s.hash(&mut hasher);
        std::fs::read(s).unwrap().hash(&mut hasher);
    }
    let stem = bot.file_stem().unwrap().to_string_lossy().into_owned();
    let cache = root.join("target/ts-projects");
    let dir = cache.join(format!("{stem}-{:016x}", hasher.finish()));
    if dir.join("ok").is_file() {
        return dir;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = tempfile::tempdir_in(&cache).unwrap();
    let out = tmp.path().join("out");
    let config = serde_json::json!({
        "compilerOptions": {
            "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext",
            "strict": true, "noEmitOnError": true, "skipLibCheck": true,
            "types": ["node"], "typeRoots": [modules.join("@types")],
            "outDir": out, "rootDir": root,
            "paths": {"switchboard-sdk": [sdk_src.join("index.ts")]},
        },
        "files": sources,
    });
    let tsconfig = tmp.path().join("tsconfig.json");
    std::fs::write(&tsconfig, config.to_string()).unwrap();
    let built = std::process::Command::new("node")
        .arg(modules.join("typescript/bin/tsc"))
        .arg("-p")
        .arg(&tsconfig)
        .output()
        .expect("run node (Node 20 or later)");
    assert!(
        built.status.success(),
        "tsc for {}: {}{}",
        bot.display(),
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let bot_js = out
        .join(bot.strip_prefix(&root).expect("a bot in this repository"))
        .with_extension("js");
    std::fs::rename(&bot_js, tmp.path().join(format!("{stem}.js"))).unwrap();
    std::fs::write(tmp.path().join("package.json"), "{\"type\": \"module\"}\n").unwrap();
    let package = tmp.path().join("node_modules/switchboard-sdk");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(
        package.join("package.json"),
        "{\"name\": \"switchboard-sdk\", \"type\": \"module\", \"exports\": \"./dist/index.js\"}\n",
    )
    .unwrap();
    std::fs::rename(out.join("sdk/typescript/src"), package.join("dist")).unwrap();
    // nats.js and its dependencies copied, as `npm install` leaves them: a
    // link out of the project would point where the operator's sandbox
    // shows nothing (it binds the program's own directory).
    for package in ["nats", "nkeys.js", "tweetnacl"] {
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(modules.join(package))
            .arg(tmp.path().join("node_modules"))
            .status()
            .expect("run cp");
        assert!(
            copied.success(),
            "copy {package} from {}",
            modules.display()
        );
    }
    std::fs::write(tmp.path().join("ok"), "").unwrap();
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test made it first: theirs is as good.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}
