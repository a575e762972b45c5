//! Real IRC servers for tests: Debian's ngIRCd and InspIRCd (with Atheme
//! services for SASL), each started per test on free loopback ports with
//! its own configuration in a temporary directory, and killed on drop.
//!
//! No system-wide daemon is used or touched: the Debian packages may run
//! one on port 6667; these servers never listen there.
//!
//! - [`NgIrcd`]: throttles ordinary clients like a real network (about 50
//!   lines in 12 s). It has an operator block ([`NgIrcd::OPER_NAME`],
//!   [`NgIrcd::OPER_PASSWORD`]): a client that sends `OPER` and
//!   `MODE <nick> +F` is no longer throttled. Optional server password and
//!   TLS (a throwaway CA made with the `openssl` command).
//! - [`InspIrcd`]: no throttling at all (`fakelag="no"`, huge
//!   `commandrate`), IRCv3 `server-time`, and with
//!   [`InspIrcd::start_with_services`] an Atheme linked to it, offering
//!   SASL PLAIN; [`InspIrcd::register_account`] creates an account through
//!   NickServ.
//!
//! Binaries are looked up in `$SWITCHBOARD_NGIRCD` / `$SWITCHBOARD_INSPIRCD`
//! / `$SWITCHBOARD_ATHEME`, then `/usr/sbin`, `/usr/bin` and `$PATH`; `make
//! tools` installs the Debian packages.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::TestCa;

/// Why a test could not get its IRC server.
#[derive(Debug, thiserror::Error)]
pub enum IrcServerError {
    /// The program is not installed.
    #[error(
        "{program} not found (looked at ${env}, /usr/sbin, /usr/bin and $PATH): run `make tools` \
         (installs the Debian packages ngircd, inspircd and atheme-services)"
    )]
    BinaryMissing {
        /// The program.
        program: &'static str,
        /// The variable that may point at it.
        env: &'static str,
    },
    /// A file in the server's directory could not be written.
    #[error("could not prepare the {program} directory: {source}")]
    Setup {
        /// The program.
        program: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Spawning failed.
    #[error("could not start {program}: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// It ran but never listened (or exited).
    #[error(
        "{program} did not start listening on 127.0.0.1:{port} within {waited:?}; its log:\n{log}"
    )]
    NotListening {
        /// The program.
        program: &'static str,
        /// The port it should listen on.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// What it printed.
        log: String,
    },
    /// Services never answered, or an account could not be registered.
    #[error("IRC services: {0}")]
    Services(String),
    /// Making the TLS certificates failed.
    #[error("could not make a TLS certificate with openssl: {0}")]
    Certificate(String),
}

const START_TIMEOUT: Duration = Duration::from_secs(15);

fn find_bin(program: &'static str, env: &'static str) -> Result<PathBuf, IrcServerError> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/usr/bin".into()];
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(IrcServerError::BinaryMissing { program, env })
}

/// A port nobody listens on right now (the OS picks it).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_file(program: &'static str, path: &Path, content: &str) -> Result<(), IrcServerError> {
    std::fs::write(path, content).map_err(|source| IrcServerError::Setup { program, source })
}

/// Spawns `cmd` with output to `log` and waits until `port` accepts
/// connections.
fn spawn_listening(
    program: &'static str,
    mut cmd: Command,
    log: &Path,
    port: u16,
) -> Result<Child, IrcServerError> {
    let out =
        std::fs::File::create(log).map_err(|source| IrcServerError::Setup { program, source })?;
    let err = out
        .try_clone()
        .map_err(|source| IrcServerError::Setup { program, source })?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .map_err(|source| IrcServerError::Spawn { program, source })?;
    let started = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if exited || started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(IrcServerError::NotListening {
                program,
                port,
                waited: started.elapsed(),
                log: std::fs::read_to_string(log).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Options for [`NgIrcd`].
#[derive(Debug, Clone, Default)]
pub struct NgIrcdOptions {
    /// Require this server password (`PASS`).
    pub password: Option<String>,
    /// Also listen with TLS (see [`NgIrcd::tls_port`], [`NgIrcd::ca_file`]).
    pub tls: bool,
}

/// A running ngIRCd on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct NgIrcd {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
}

impl NgIrcd {
    /// The server's name (prefix of its own messages).
    pub const SERVER_NAME: &'static str = "irc.test";
    /// Operator name for `OPER`.
    pub const OPER_NAME: &'static str = "sbtest";
    /// Operator password for `OPER`.
    pub const OPER_PASSWORD: &'static str = "sbtest-oper";

    /// Starts ngIRCd with default options.
    pub fn start() -> Result<NgIrcd, IrcServerError> {
        Self::start_with(NgIrcdOptions::default())
    }

    /// Starts ngIRCd with `opts` on free ports.
    pub fn start_with(opts: NgIrcdOptions) -> Result<NgIrcd, IrcServerError> {
        const P: &str = "ngircd";
        let bin = find_bin(P, "SWITCHBOARD_NGIRCD")?;
        let dir = tempfile::Builder::new()
            .prefix("sb-ngircd-")
            .tempdir()
            .map_err(|source| IrcServerError::Setup { program: P, source })?;
        let port = free_port().map_err(|source| IrcServerError::Setup { program: P, source })?;
        let conf_d = dir.path().join("conf.d");
        std::fs::create_dir_all(&conf_d)
            .map_err(|source| IrcServerError::Setup { program: P, source })?;
        let mut ssl = String::new();
        let mut tls_port = None;
        if opts.tls {
            let tp = free_port().map_err(|source| IrcServerError::Setup { program: P, source })?;
            make_certificates(dir.path())?;
            ssl = format!(
                "[SSL]\nCertFile = {0}/server.pem\nKeyFile = {0}/server.key\nPorts = {tp}\n",
                dir.path().display()
            );
            tls_port = Some(tp);
        }
        let password = opts
            .password
            .as_deref()
            .map(|p| format!("Password = {p}\n"))
            .unwrap_or_default();
        let conf = format!(
            "[Global]\nName = {name}\nInfo = Switchboard test server\nAdminInfo1 = test\n\
             AdminInfo2 = test\nAdminEMail = test@test.invalid\nListen = 127.0.0.1\n\
             Ports = {port}\nMotdPhrase = \"Switchboard test\"\n{password}\
             [Limits]\nMaxConnectionsIP = 0\nMaxJoins = 0\nMaxNickLength = 30\n\
             PingTimeout = 120\nPongTimeout = 30\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\nIncludeDir = {conf_d}\n\
             [Operator]\nName = {oper}\nPassword = {oper_pw}\n{ssl}",
            name = Self::SERVER_NAME,
            conf_d = conf_d.display(),
            oper = Self::OPER_NAME,
            oper_pw = Self::OPER_PASSWORD,
        );
        write_file(P, &dir.path().join("ngircd.conf"), &conf)?;
        let mut server = NgIrcd {
            dir,
            bin,
            child: None,
            port,
            tls_port,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), IrcServerError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-n")
            .arg("-f")
            .arg(self.dir.path().join("ngircd.conf"));
        let child = spawn_listening(
            "ngircd",
            cmd,
            &self.dir.path().join("ngircd.log"),
            self.port,
        )?;
        self.child = Some(child);
        if let Some(tp) = self.tls_port {
            let started = Instant::now();
            while TcpStream::connect(("127.0.0.1", tp)).is_err() {
                if started.elapsed() > START_TIMEOUT {
                    return Err(IrcServerError::NotListening {
                        program: "ngircd",
                        port: tp,
                        waited: started.elapsed(),
                        log: self.log(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The plain-text port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, when started with `tls`.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The CA certificate (PEM) that signed the server's certificate (for
    /// `127.0.0.1` and `localhost`), when started with `tls`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls_port.map(|_| self.dir.path().join("ca.pem"))
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL: clients see the connection drop).
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same ports after [`NgIrcd::kill`].
    pub fn restart(&mut self) -> Result<(), IrcServerError> {
        self.kill();
        let started = Instant::now();
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(_) if started.elapsed() < START_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }
}

impl Drop for NgIrcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost, signed by it:
/// `ca.pem`, `server.pem`, `server.key` in `dir` (made by [`TestCa`], the
/// one certificate maker of the testkit).
fn make_certificates(dir: &Path) -> Result<(), IrcServerError> {
    let ca = TestCa::new().map_err(|e| IrcServerError::Certificate(e.to_string()))?;
    for (from, to) in [
        (ca.ca_file(), "ca.pem"),
        (ca.server_cert_file(), "server.pem"),
        (ca.server_key_file(), "server.key"),
    ] {
        std::fs::copy(&from, dir.join(to)).map_err(|e| {
            IrcServerError::Certificate(format!("cannot copy {}: {e}", from.display()))
        })?;
    }
    Ok(())
}

/// A running InspIRCd on 127.0.0.1 (optionally with Atheme), killed on
/// drop.
#[derive(Debug)]
pub struct InspIrcd {
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    services: Option<Child>,
    port: u16,
}

impl InspIrcd {
    /// The server's name.
    pub const SERVER_NAME: &'static str = "irc.test";
    /// The services' server name.
    pub const SERVICES_NAME: &'static str = "services.test";

    /// Starts InspIRCd without throttling, without services.
    pub fn start() -> Result<InspIrcd, IrcServerError> {
        Self::start_inner(false)
    }

    /// Starts InspIRCd and Atheme linked to it (SASL PLAIN, NickServ), and
    /// waits until NickServ answers.
    pub fn start_with_services() -> Result<InspIrcd, IrcServerError> {
        Self::start_inner(true)
    }

    fn start_inner(services: bool) -> Result<InspIrcd, IrcServerError> {
        const P: &str = "inspircd";
        let bin = find_bin(P, "SWITCHBOARD_INSPIRCD")?;
        let dir = tempfile::Builder::new()
            .prefix("sb-inspircd-")
            .tempdir()
            .map_err(|source| IrcServerError::Setup { program: P, source })?;
        let setup = |source| IrcServerError::Setup { program: P, source };
        let port = free_port().map_err(setup)?;
        let link_port = free_port().map_err(setup)?;
        let d = dir.path().display().to_string();
        let mut conf = format!(
            r#"<server name="{name}" description="Switchboard test server" network="testnet" id="00B">
<admin name="test" nick="test" email="test@test.invalid">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="main" allow="*" timeout="60" pingfreq="120" hardsendq="1048576" softsendq="65536" recvq="65536" threshold="100000" commandrate="100000" fakelag="no" localmax="1000" globalmax="1000" useident="no" resolvehostnames="no">
<pid file="{d}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/ircd.log">
<dns server="127.0.0.1" timeout="1">
<channels users="100" opers="100">
<module name="cap">
<module name="ircv3">
<module name="ircv3_servertime">
"#,
            name = Self::SERVER_NAME,
        );
        if services {
            conf.push_str(&format!(
                r#"<bind address="127.0.0.1" port="{link_port}" type="servers">
<module name="sasl">
<module name="services_account">
<module name="spanningtree">
<link name="{svc}" ipaddr="127.0.0.1" port="{link_port}" allowmask="127.0.0.0/8" sendpass="sb-link" recvpass="sb-link">
<uline server="{svc}" silent="yes">
<sasl target="{svc}">
"#,
                svc = Self::SERVICES_NAME,
            ));
        }
        write_file(P, &dir.path().join("inspircd.conf"), &conf)?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--nofork")
            .arg("--runasroot")
            .arg(format!("--config={d}/inspircd.conf"));
        let child = spawn_listening(P, cmd, &dir.path().join("inspircd.out"), port)?;
        let mut server = InspIrcd {
            dir,
            bin,
            child: Some(child),
            services: None,
            port,
        };
        if services {
            server.start_atheme(link_port)?;
        }
        Ok(server)
    }

    fn start_atheme(&mut self, link_port: u16) -> Result<(), IrcServerError> {
        const P: &str = "atheme-services";
        let bin = find_bin(P, "SWITCHBOARD_ATHEME")?;
        let d = self.dir.path().display().to_string();
        let data = self.dir.path().join("atheme-data");
        std::fs::create_dir_all(&data)
            .map_err(|source| IrcServerError::Setup { program: P, source })?;
        let conf = format!(
            r#"loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/crypto/pbkdf2v2";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/identify";
loadmodule "modules/nickserv/register";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";
serverinfo {{
	name = "{svc}"; desc = "Atheme IRC Services"; numeric = "00A"; recontime = 1;
	netname = "testnet"; hidehostsuffix = "users.test"; adminname = "test";
	adminemail = "test@test.invalid"; registeremail = "noreply@test.invalid";
	loglevel = {{ error; info; admin; network; }};
	maxlogins = 5; maxusers = 5; mdlimit = 30; emaillimit = 10; emailtime = 300;
	auth = none; casemapping = rfc1459;
}};
uplink "{irc}" {{
	host = "127.0.0.1"; port = {link_port};
	send_password = "sb-link"; receive_password = "sb-link";
}};
nickserv {{
	nick = "NickServ"; user = "NickServ"; host = "{svc}"; real = "Nickname Services";
	maxnicks = 5; expire = 30;
}};
saslserv {{
	nick = "SaslServ"; user = "SaslServ"; host = "{svc}"; real = "SASL Authentication Agent";
}};
general {{
	flood_msgs = 1000; flood_time = 10; ratelimit_uses = 1000; ratelimit_period = 60;
	commit_interval = 5; default_clone_allowed = 100; default_clone_warn = 100;
	uplink_sendq_limit = 1048576; language = "en";
}};
"#,
            svc = Self::SERVICES_NAME,
            irc = Self::SERVER_NAME,
        );
        let conf_path = self.dir.path().join("atheme.conf");
        write_file(P, &conf_path, &conf)?;
        let log = std::fs::File::create(self.dir.path().join("atheme.out"))
            .map_err(|source| IrcServerError::Setup { program: P, source })?;
        let log2 = log
            .try_clone()
            .map_err(|source| IrcServerError::Setup { program: P, source })?;
        let child = Command::new(bin)
            .arg("-n")
            .arg("-c")
            .arg(&conf_path)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(format!("{d}/atheme.log"))
            .arg("-p")
            .arg(format!("{d}/atheme.pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| IrcServerError::Spawn { program: P, source })?;
        self.services = Some(child);
        // Linked once NickServ answers a client.
        let started = Instant::now();
        loop {
            match self.nickserv_says("sbprobe", "HELP", |_| true) {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    return Err(IrcServerError::Services(format!(
                        "NickServ did not answer within {:?} ({e}); atheme log:\n{}",
                        started.elapsed(),
                        std::fs::read_to_string(self.dir.path().join("atheme.out"))
                            .unwrap_or_default()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Registers `account` with `password` through NickServ (a client
    /// with that nick sends `REGISTER`), so SASL PLAIN can log in with it.
    pub fn register_account(&self, account: &str, password: &str) -> Result<(), IrcServerError> {
        if self.services.is_none() {
            return Err(IrcServerError::Services(
                "no services: start with InspIrcd::start_with_services".into(),
            ));
        }
        let reply = self
            .nickserv_says(
                account,
                &format!("REGISTER {password} {account}@test.invalid"),
                |l| l.contains("registered"),
            )
            .map_err(IrcServerError::Services)?;
        if reply.to_ascii_lowercase().contains("is now registered") {
            Ok(())
        } else {
            Err(IrcServerError::Services(format!(
                "REGISTER refused: {reply}"
            )))
        }
    }

    /// Connects as `nick`, sends `text` to NickServ and returns the first
    /// NickServ notice for which `accept` holds.
    fn nickserv_says(
        &self,
        nick: &str,
        text: &str,
        accept: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(stream, "NICK {nick}\r\nUSER {nick} 0 * :probe\r\n").map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sent = false;
        while Instant::now() < deadline {
            line.clear();
            if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
            let l = line.trim_end();
            if let Some(rest) = l.strip_prefix("PING ") {
                write!(stream, "PONG {rest}\r\n").map_err(|e| e.to_string())?;
            } else if !sent && (l.contains(" 376 ") || l.contains(" 422 ")) {
                write!(stream, "PRIVMSG NickServ :{text}\r\n").map_err(|e| e.to_string())?;
                sent = true;
            } else if l.contains(" 401 ") {
                let _ = write!(stream, "QUIT\r\n");
                return Err("NickServ is not on the network yet".into());
            } else if l.starts_with(":NickServ!") && l.contains(" NOTICE ") && accept(l) {
                let _ = write!(stream, "QUIT\r\n");
                return Ok(l.to_string());
            }
        }
        Err("no answer from NickServ".into())
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills InspIRCd (and Atheme).
    pub fn kill(&mut self) {
        kill(&mut self.services);
        kill(&mut self.child);
    }

    /// What InspIRCd logged so far.
    pub fn log(&self) -> String {
        let mut s =
            std::fs::read_to_string(self.dir.path().join("inspircd.out")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir.path().join("ircd.log")).unwrap_or_default());
        s
    }

    /// The InspIRCd binary in use.
    pub fn binary(&self) -> &Path {
        &self.bin
    }
}

impl Drop for InspIrcd {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(port: u16, nick: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "NICK {nick}\r\nUSER {nick} 0 * :t\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).expect("read");
            if line.contains(" 001 ") {
                return line;
            }
        }
    }

    #[test]
    fn ngircd_starts_restarts_and_welcomes() {
        let mut s = NgIrcd::start().expect("ngircd");
        assert!(welcome(s.port(), "t1").contains("t1"));
        let port = s.port();
        s.kill();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        s.restart().expect("restart");
        assert_eq!(s.port(), port);
        assert!(welcome(s.port(), "t2").contains("t2"));
    }

    #[test]
    fn inspircd_with_services_registers_accounts() {
        let s = InspIrcd::start_with_services().expect("inspircd + atheme");
        s.register_account("sbacct", "sb-secret-pw")
            .expect("register");
        assert!(welcome(s.port(), "t3").contains("t3"));
    }
}
