//! TLS for `wss://` relays: the operators' shared client settings
//! (`switchboard-tls`: rustls with ring, the system's roots, or only the
//! CAs in `tls_ca` for a relay behind a private CA). Built once per
//! configuration, so a bad `tls_ca` is a start or reload error, not a
//! connection error repeated on every attempt.

use std::path::Path;
use std::sync::Arc;

/// The client config for `tls_ca` (or the system roots).
pub fn client_config(tls_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    switchboard_tls::client_config(tls_ca).map_err(|e| e.to_string())
}
