//! Repository signing keys from DID documents: `did:plc` from the PLC
//! directory (`firehose.plc_url`), `did:web` from
//! `https://<host>/.well-known/did.json`. The key is the verification
//! method `#atproto`: a `Multikey`, or one of the legacy types
//! `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
//! that older PLC directories (dev-env's among them) serve. Keys are cached: a commit concerning
//! the bot is rare next to the firehose's volume, but a busy thread brings
//! many from the same repositories. An `#identity` event drops the entry
//! (the key may have rotated), and a signature that fails with a key
//! fetched more than [`REFETCH_AFTER`] ago is tried once with a fresh one
//! (a rotation whose `#identity` went by before the cursor).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::verify::{Curve, KeyError, PublicKey};

/// How many repositories' keys are kept.
pub const CACHE: usize = 10_000;
/// How long a key is trusted without an `#identity` event.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// A failed signature re-fetches a key only when it is older than this, so
/// a stream of bad commits cannot turn into a stream of lookups.
pub const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// Why a DID gave no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DidError {
    /// Neither `did:plc:` nor `did:web:`.
    #[error("unsupported DID method in {did} (ATProto uses did:plc and did:web)")]
    Method {
        /// The DID.
        did: String,
    },
    /// The document could not be fetched.
    #[error("cannot fetch the DID document of {did}: {reason}")]
    Fetch {
        /// The DID.
        did: String,
        /// What failed (status or network).
        reason: String,
    },
    /// The document has no usable `#atproto` key, or is another DID's.
    #[error("the DID document of {did} has no usable #atproto key: {reason}")]
    Document {
        /// The DID.
        did: String,
        /// What is wrong.
        reason: String,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`DidError`].
    DidError => DidErrorKind { Method, Fetch, Document }
}

#[derive(Deserialize)]
struct Document {
    id: String,
    #[serde(default, rename = "verificationMethod")]
    verification_method: Vec<Method>,
}

#[derive(Deserialize)]
struct Method {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, rename = "publicKeyMultibase")]
    public_key_multibase: Option<String>,
}

/// The `#atproto` key of a DID document (JSON).
///
/// # Errors
///
/// [`DidError::Document`] when the document is not `did`'s or has no
/// `#atproto` Multikey of a supported curve.
pub fn key_of(did: &str, document: &[u8]) -> Result<PublicKey, DidError> {
    let bad = |reason: String| DidError::Document {
        did: did.to_string(),
        reason,
    };
    let doc: Document = serde_json::from_slice(document).map_err(|e| bad(e.to_string()))?;
    if doc.id != did {
        return Err(bad(format!("the document is {}'s", doc.id)));
    }
    let method = doc
        .verification_method
        .iter()
        .find(|m| m.id == "#atproto" || m.id == format!("{did}#atproto"))
        .ok_or_else(|| bad("no verification method #atproto".into()))?;
    let multibase = method
        .public_key_multibase
        .as_deref()
        .ok_or_else(|| bad("#atproto has no publicKeyMultibase".into()))?;
    let key = match method.kind.as_str() {
        "Multikey" => PublicKey::from_multikey(multibase),
        "EcdsaSecp256k1VerificationKey2019" => PublicKey::from_legacy(Curve::K256, multibase),
        "EcdsaSecp256r1VerificationKey2019" => PublicKey::from_legacy(Curve::P256, multibase),
        other => {
            return Err(bad(format!(
                "#atproto is a {other}, not a Multikey (or a legacy Ecdsa…VerificationKey2019)"
            )))
        }
    };
    key.map_err(|e: KeyError| bad(e.to_string()))
}

/// The URL of `did`'s document.
///
/// # Errors
///
/// [`DidError::Method`] for a method other than plc and web (or a
/// did:web with a path, which ATProto does not allow).
pub fn document_url(plc_url: &str, did: &str) -> Result<String, DidError> {
    let unsupported = || DidError::Method {
        did: did.to_string(),
    };
    if let Some(id) = did.strip_prefix("did:plc:") {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(unsupported());
        }
        Ok(format!("{plc_url}/{did}"))
    } else if let Some(host) = did.strip_prefix("did:web:") {
        if host.is_empty() || host.contains(':') || host.contains('/') {
            return Err(unsupported());
        }
        let host = host.replace("%3A", ":").replace("%3a", ":");
        Ok(format!("https://{host}/.well-known/did.json"))
    } else {
        Err(unsupported())
    }
}

/// Fetches and caches signing keys.
#[derive(Debug)]
pub struct Resolver {
    http: reqwest::Client,
    plc_url: String,
    cache: HashMap<String, (PublicKey, Instant)>,
}

impl Resolver {
    /// A resolver using `plc_url` for did:plc.
    ///
    /// # Errors
    ///
    /// A message when the HTTP client cannot be built.
    pub fn new(
        plc_url: &str,
        tls: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Resolver, String> {
        let http = crate::xrpc::http_client(tls, timeout).map_err(|e| e.to_string())?;
        Ok(Resolver {
            http,
            plc_url: plc_url.to_string(),
            cache: HashMap::new(),
        })
    }

    /// The PLC directory it asks.
    pub fn plc_url(&self) -> &str {
        &self.plc_url
    }

    /// The cached key of `did` and how old it is.
    pub fn cached(&self, did: &str) -> Option<(PublicKey, Duration)> {
        self.cache
            .get(did)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(k, at)| (k.clone(), at.elapsed()))
    }

    /// Drops what is known of `did` (its identity changed).
    pub fn forget(&mut self, did: &str) {
        self.cache.remove(did);
    }

    /// Fetches `did`'s key now and caches it.
    ///
    /// # Errors
    ///
    /// [`DidError`] when the document cannot be fetched or has no key.
    pub async fn fetch(&mut self, did: &str) -> Result<PublicKey, DidError> {
        let url = document_url(&self.plc_url, did)?;
        let fetch = |reason: String| DidError::Fetch {
            did: did.to_string(),
            reason,
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fetch(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fetch(format!("HTTP {status}")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| fetch(e.without_url().to_string()))?;
        let key = key_of(did, &body)?;
        if self.cache.len() >= CACHE {
            // Drop the oldest tenth at once rather than one per insert.
            let mut ages: Vec<(Instant, String)> = self
                .cache
                .iter()
                .map(|(d, (_, at))| (*at, d.clone()))
                .collect();
            ages.sort();
            for (_, d) in ages.into_iter().take(CACHE / 10) {
                self.cache.remove(&d);
            }
        }
        self.cache
            .insert(did.to_string(), (key.clone(), Instant::now()));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A k256 multikey from the did:key test vectors of the ATProto specs.
    const K256: &str = "zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc";

    #[test]
    fn documents_are_found_for_plc_and_web_only() {
        let plc = "https://plc.directory";
        assert_eq!(
            document_url(plc, "did:plc:ewvi7nxzyoun6zhxrhs64oiz").unwrap(),
            "https://plc.directory/did:plc:ewvi7nxzyoun6zhxrhs64oiz"
        );
        assert_eq!(
            document_url(plc, "did:web:example.com").unwrap(),
            "https://example.com/.well-known/did.json"
        );
        assert_eq!(
            document_url(plc, "did:web:localhost%3A8080").unwrap(),
            "https://localhost:8080/.well-known/did.json"
        );
        for bad in [
            "did:key:zQ3sh",
            "did:plc:../x",
            "did:web:a.com:path",
            "did:plc:",
            "x",
        ] {
            assert_eq!(
                document_url(plc, bad).unwrap_err().kind(),
                DidErrorKind::Method,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_atproto_multikey_is_the_key() {
        let did = "did:plc:abc";
        let doc = |id: &str, vm: serde_json::Value| {
            serde_json::to_vec(&json!({"id": id, "verificationMethod": [vm]})).unwrap()
        };
        let good = json!({"id": "#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": K256});
        assert!(matches!(
            key_of(did, &doc(did, good.clone())).unwrap(),
            PublicKey::K256(_)
        ));
        let full_id =
            json!({"id": format!("{did}#atproto"), "type": "Multikey", "publicKeyMultibase": K256});
        assert!(key_of(did, &doc(did, full_id)).is_ok());
        for (document, says) in [
            (doc("did:plc:other", good.clone()), "did:plc:other"),
            (
                doc(
                    did,
                    json!({"id": "#other", "type": "Multikey", "publicKeyMultibase": K256}),
                ),
                "no verification method",
            ),
            (
                doc(
                    did,
                    json!({"id": "#atproto", "type": "JsonWebKey2020", "publicKeyMultibase": K256}),
                ),
                "not a Multikey",
            ),
            (
                // A Multikey (with its prefix) where the legacy type wants the point alone.
                doc(
                    did,
                    json!({"id": "#atproto", "type": "EcdsaSecp256k1VerificationKey2019", "publicKeyMultibase": K256}),
                ),
                "not a valid compressed point",
            ),
            (
                doc(
                    did,
                    json!({"id": "#atproto", "type": "Multikey", "publicKeyMultibase": "zzz"}),
                ),
                "#atproto",
            ),
            (b"not json".to_vec(), "no usable"),
        ] {
            let e = key_of(did, &document).unwrap_err();
            assert_eq!(e.kind(), DidErrorKind::Document);
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
