//! Throwaway certificates for TLS tests, made with the `openssl` command.
//!
//! [`TestCa`] is a fresh CA in its own temporary directory, with one
//! server certificate it signed for `127.0.0.1` and `localhost` (the names
//! a test server is reached by). Every `TestCa::new()` is a new,
//! unrelated CA, so a "wrong CA" test is simply a second one:
//!
//! ```no_run
//! use switchboard_testkit::TestCa;
//!
//! let ca = TestCa::new().expect("openssl");
//! let stranger = TestCa::new().expect("openssl");
//! // Serve ca.server_cert_file() + ca.server_key_file(); clients that
//! // trust ca.ca_file() get in, clients that trust stranger.ca_file() do not.
//! assert_ne!(ca.ca_file(), stranger.ca_file());
//! ```
//!
//! Keys are ECDSA P-256: quick to make (a test makes several) and
//! accepted by rustls and by nats-server. Certificates are valid for two
//! days.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The temporary directory could not be made.
    #[error("could not create a directory for test certificates: {0}")]
    Dir(std::io::Error),
    /// A file could not be written.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The `openssl` command could not be run at all.
    #[error("cannot run openssl (Debian: `apt-get install openssl`): {0}")]
    Spawn(std::io::Error),
    /// `openssl` ran and failed.
    #[error("openssl failed to {step}: {stderr}")]
    Openssl {
        /// What it was asked to do.
        step: &'static str,
        /// What it printed.
        stderr: String,
    },
}

/// A throwaway CA and a server certificate it signed (see the module
/// docs). The files are deleted when it is dropped, so it must outlive
/// any server that reads them (a restarted server reads them again).
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Make a new CA and a server certificate for `127.0.0.1` and
    /// `localhost` in a fresh temporary directory.
    pub fn new() -> Result<TestCa, TlsError> {
        let dir = tempfile::Builder::new()
            .prefix("sb-tls-")
            .tempdir()
            .map_err(TlsError::Dir)?;
        write_ca_and_server_cert(dir.path())?;
        Ok(TestCa { dir })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM): what clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM), for `IP:127.0.0.1` and
    /// `DNS:localhost`, signed by [`TestCa::ca_file`].
    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server certificate's private key (PEM, unencrypted).
    pub fn server_key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// Write `ca.pem`/`ca.key` and `server.pem`/`server.key` (signed by that
/// CA, for 127.0.0.1 and localhost) into `dir`.
fn write_ca_and_server_cert(dir: &Path) -> Result<(), TlsError> {
    let run = |step: &'static str, args: &[&str]| -> Result<(), TlsError> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(TlsError::Spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TlsError::Openssl {
                step,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    };
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
         extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .map_err(|source| TlsError::Write {
        path: ext.display().to_string(),
        source,
    })?;
    // A CA name of its own (the directory is unique), so that a client
    // given another TestCa finds no issuer at all rather than a namesake.
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let subject = format!("/CN=Switchboard test CA {name}");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca_args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject];
    ca_args.extend(ec);
    ca_args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    run("make the CA", &ca_args)?;
    let mut csr_args = vec!["req", "-nodes", "-subj", "/CN=localhost"];
    csr_args.extend(ec);
    csr_args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run("make the server key", &csr_args)?;
    run(
        "sign the server certificate",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl(args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    #[test]
    fn server_cert_is_signed_by_its_ca_only() {
        let ca = TestCa::new().expect("certificates");
        let other = TestCa::new().expect("certificates");
        let cert = ca.server_cert_file();
        let cert = cert.to_str().expect("utf-8 path");
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            ca.ca_file().to_str().expect("utf-8 path"),
            cert,
        ]);
        assert!(ok, "{text}");
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            other.ca_file().to_str().expect("utf-8 path"),
            cert,
        ]);
        assert!(!ok, "another CA must not verify it: {text}");
        let (ok, text) = openssl(&["x509", "-in", cert, "-noout", "-ext", "subjectAltName"]);
        assert!(ok, "{text}");
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
        assert!(text.contains("DNS:localhost"), "{text}");
    }
}
