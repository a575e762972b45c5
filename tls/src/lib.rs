//! The TLS client settings every operator that dials out uses (IRC over
//! TLS, Nostr `wss://` relays, Bluesky's HTTPS and Jetstream): rustls with
//! the ring provider (no aws-lc build), safe protocol versions, and the
//! system's root certificates, or only the CAs of a given PEM file (a
//! server behind a private CA). One place, so the operators agree on what
//! they trust and say the same thing when it goes wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why the client settings could not be built. Messages say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file cannot be read.
    #[error("cannot read tls_ca {}: {reason}", path.display())]
    CaUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA file is not PEM.
    #[error("tls_ca {} is not PEM: {reason}", path.display())]
    CaNotPem {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        reason: String,
    },
    /// The CA file holds no certificate.
    #[error("tls_ca {} holds no certificate", path.display())]
    CaEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file was refused as a root.
    #[error("tls_ca {}: {reason}", path.display())]
    CaRefused {
        /// The file.
        path: PathBuf,
        /// rustls's words.
        reason: String,
    },
    /// No CA file, and the system has no root certificates.
    #[error("no system root certificates found (install ca-certificates, or set tls_ca)")]
    NoSystemRoots,
    /// rustls refused the protocol settings (not expected with ring).
    #[error("TLS setup: {reason}")]
    Setup {
        /// rustls's words.
        reason: String,
    },
}

switchboard_proto::error_kinds! {
    /// Coarse classes of [`TlsError`].
    TlsError => TlsErrorKind { CaUnreadable, CaNotPem, CaEmpty, CaRefused, NoSystemRoots, Setup }
}

/// The client settings: the CAs in `tls_ca` only, or the system's roots.
///
/// # Errors
///
/// [`TlsError`] for a CA file that cannot be read, is not PEM, holds no
/// certificate, or a system without root certificates.
pub fn client_config(tls_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match tls_ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsError::CaUnreadable {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::CaNotPem {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(TlsError::CaEmpty {
                    path: path.to_owned(),
                });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| TlsError::CaRefused {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "while loading system certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup {
            reason: e.to_string(),
        })?;
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_tls_ca_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client_config(Some(&missing)).unwrap_err();
        assert_eq!(e.kind(), TlsErrorKind::CaUnreadable, "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert_eq!(e.kind(), TlsErrorKind::CaEmpty, "{e}");
    }

    #[test]
    fn the_system_roots_are_used_without_a_ca_file() {
        // The test machines have ca-certificates (the IRC and Bluesky
        // operators need them anyway).
        client_config(None).expect("system roots");
    }
}
