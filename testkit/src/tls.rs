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

    /// A certificate for a cluster host, signed by this CA: `name` (a
    /// file name, also the subject's CN) for the IP addresses `ips`,
    /// usable as a server's and as a client's (a route is both; the same
    /// certificate may serve the host's client listener). Returns the
    /// certificate and key files.
    ///
    /// # Errors
    ///
    /// When openssl fails.
    pub fn route_cert(&self, name: &str, ips: &[&str]) -> Result<(PathBuf, PathBuf), TlsError> {
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        let ext = format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
            sans.join(",")
        );
        sign(self.dir.path(), name, &ext)?;
        Ok((
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        ))
    }
}

/// Run `openssl` in `dir`; `step` says what for, in the error.
fn openssl_in(dir: &Path, step: &'static str, args: &[&str]) -> Result<(), TlsError> {
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
}

/// ECDSA P-256 key options for `openssl req`.
const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// Write `ca.pem`/`ca.key` and `server.pem`/`server.key` (signed by that
/// CA, for 127.0.0.1 and localhost) into `dir`.
fn write_ca_and_server_cert(dir: &Path) -> Result<(), TlsError> {
    // A CA name of its own (the directory is unique), so that a client
    // given another TestCa finds no issuer at all rather than a namesake.
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let subject = format!("/CN=Switchboard test CA {name}");
    let mut ca_args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject];
    ca_args.extend(EC_KEY);
    ca_args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl_in(dir, "make the CA", &ca_args)?;
    sign(
        dir,
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
}

/// Make `<name>.key` and `<name>.pem` in `dir`, signed by the CA there,
/// with the extensions `ext` adds to a leaf's.
fn sign(dir: &Path, name: &str, ext: &str) -> Result<(), TlsError> {
    let ext_file = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext_file,
        format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}"),
    )
    .map_err(|source| TlsError::Write {
        path: ext_file.display().to_string(),
        source,
    })?;
    let (key, csr, pem, ext_name) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={name}");
    let mut csr_args = vec!["req", "-nodes", "-subj", &subject];
    csr_args.extend(EC_KEY);
    csr_args.extend(["-keyout", &key, "-out", &csr]);
    openssl_in(dir, "make a key", &csr_args)?;
    openssl_in(
        dir,
        "sign a certificate",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_name,
            "-out",
            &pem,
        ],
    )
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

    #[test]
    fn route_certs_serve_both_ends_for_their_addresses() {
        let ca = TestCa::new().expect("certificates");
        let (cert, key) = ca.route_cert("alpha", &["127.0.0.2"]).expect("route cert");
        assert!(key.is_file());
        let cert = cert.to_str().expect("utf-8 path");
        let ca_file = ca.ca_file();
        let ca_file = ca_file.to_str().expect("utf-8 path");
        for purpose in ["sslserver", "sslclient"] {
            let (ok, text) = openssl(&["verify", "-purpose", purpose, "-CAfile", ca_file, cert]);
            assert!(ok, "{purpose}: {text}");
        }
        let (ok, text) = openssl(&["x509", "-in", cert, "-noout", "-ext", "subjectAltName"]);
        assert!(ok && text.contains("IP Address:127.0.0.2"), "{text}");
        // The plain server certificate is not a client's.
        let server = ca.server_cert_file();
        let (ok, _) = openssl(&[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            ca_file,
            server.to_str().expect("utf-8 path"),
        ]);
        assert!(!ok, "a server-only certificate must not pass as a client's");
    }
}
