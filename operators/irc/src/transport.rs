//! Opening the byte stream to the server: TCP, optionally wrapped in TLS
//! (rustls with ring; the system's roots, or only the CAs of `tls_ca`).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::IrcConfig;

/// A connected stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a connection could not be opened (the message says what to fix).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed or timed out.
    #[error("cannot connect to {address}: {reason}")]
    Tcp {
        /// `server:port`.
        address: String,
        /// What happened.
        reason: String,
    },
    /// The TLS setup (roots, CA file, server name) is unusable.
    #[error("TLS setup for {address} failed: {reason}")]
    TlsSetup {
        /// `server:port`.
        address: String,
        /// What happened.
        reason: String,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS handshake with {address} failed: {reason}")]
    Handshake {
        /// `server:port`.
        address: String,
        /// What happened.
        reason: String,
    },
}

/// How long a TCP connect plus TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects to the server of `config`.
///
/// # Errors
///
/// [`ConnectError`] when the server cannot be reached or TLS fails.
pub async fn connect(config: &IrcConfig) -> Result<Box<dyn Stream>, ConnectError> {
    let address = config.address();
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((config.server.as_str(), config.port)),
    )
    .await
    .map_err(|_| ConnectError::Tcp {
        address: address.clone(),
        reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
    })?
    .map_err(|e| ConnectError::Tcp {
        address: address.clone(),
        reason: e.to_string(),
    })?;
    let _ = tcp.set_nodelay(true);
    if !config.tls {
        return Ok(Box::new(tcp));
    }
    let tls = tls_config(config).map_err(|reason| ConnectError::TlsSetup {
        address: address.clone(),
        reason,
    })?;
    let name = ServerName::try_from(config.server.clone()).map_err(|e| ConnectError::TlsSetup {
        address: address.clone(),
        reason: format!("`{}` is not a valid TLS server name: {e}", config.server),
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| ConnectError::Handshake {
            address: address.clone(),
            reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        })?
        .map_err(|e| ConnectError::Handshake {
            address,
            reason: e.to_string(),
        })?;
    Ok(Box::new(stream))
}

/// The rustls client config (shared by the operators): ring, safe
/// defaults, roots from `tls_ca` or the system.
///
/// The error is the message `start` fails with; no caller branches on it.
pub fn tls_config(config: &IrcConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    switchboard_tls::client_config(config.tls_ca.as_deref()).map_err(|e| e.to_string())
}
