//! Is a `#commit` what its repository signed? The commit block (in the
//! CAR) is `{did, version, data, rev, prev, sig}`; `sig` is an ECDSA
//! signature (64 bytes, `r‖s`, low-S) over the SHA-256 of the block
//! re-encoded as DAG-CBOR without `sig`, by the key the DID document names
//! `#atproto` (k256 or p256, as a multikey). `data` is the root of the
//! repository's Merkle search tree (MST); the CAR carries the tree nodes
//! on the way to each changed record, so each record is checked to be in
//! the signed tree under its path, with the CID the op names. A relay can
//! then neither forge nor swap a record.
//!
//! k256 signatures are checked by libsecp256k1 (the `secp256k1` crate the
//! Nostr operator already builds; it refuses high-S signatures itself),
//! p256 ones by RustCrypto's `p256` (high-S refused here, as ATProto asks).

use std::sync::OnceLock;

use ipld_core::cid::multibase::{self, Base};
use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use serde::Deserialize;

use super::car::{Blocks, CarError};

/// Multicodec prefix of a compressed secp256k1 public key (`0xe7`, varint).
pub const K256_PREFIX: [u8; 2] = [0xe7, 0x01];
/// Multicodec prefix of a compressed P-256 public key (`0x1200`, varint).
pub const P256_PREFIX: [u8; 2] = [0x80, 0x24];
/// Deepest MST walked (the real ones are a handful of levels).
pub const MAX_MST_DEPTH: usize = 64;

/// A repository signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// secp256k1 (`k256`).
    K256(secp256k1::PublicKey),
    /// NIST P-256 (`p256`).
    P256(p256::ecdsa::VerifyingKey),
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base58btc multibase (`z…`).
    #[error("the key is not base58btc multibase: {reason}")]
    Encoding {
        /// Why.
        reason: String,
    },
    /// A key type other than k256 and p256.
    #[error(
        "unsupported key type (multicodec prefix {prefix:02x?}); ATProto keys are k256 or p256"
    )]
    Type {
        /// The first bytes.
        prefix: Vec<u8>,
    },
    /// Not a point on the curve.
    #[error("the key is not a valid compressed point")]
    Point,
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`KeyError`].
    KeyError => KeyErrorKind { Encoding, Type, Point }
}

fn secp() -> &'static secp256k1::Secp256k1<secp256k1::VerifyOnly> {
    static CTX: OnceLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> = OnceLock::new();
    CTX.get_or_init(secp256k1::Secp256k1::verification_only)
}

/// The two curves ATProto signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// secp256k1.
    K256,
    /// NIST P-256.
    P256,
}

fn base58btc(text: &str) -> Result<Vec<u8>, KeyError> {
    let (base, bytes) = multibase::decode(text).map_err(|e| KeyError::Encoding {
        reason: e.to_string(),
    })?;
    if base != Base::Base58Btc {
        return Err(KeyError::Encoding {
            reason: format!("{base:?} instead of base58btc"),
        });
    }
    Ok(bytes)
}

impl PublicKey {
    /// A point (SEC1, compressed or not) on `curve`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Point`] when it is not one.
    pub fn from_sec1(curve: Curve, point: &[u8]) -> Result<PublicKey, KeyError> {
        match curve {
            Curve::K256 => secp256k1::PublicKey::from_slice(point)
                .map(PublicKey::K256)
                .map_err(|_| KeyError::Point),
            Curve::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P256)
                .map_err(|_| KeyError::Point),
        }
    }

    /// A `publicKeyMultibase` of the legacy verification method types
    /// (`EcdsaSecp256k1VerificationKey2019`,
    /// `EcdsaSecp256r1VerificationKey2019`): base58btc of the point alone,
    /// the curve given by the type. Older PLC directories (dev-env's
    /// among them) still serve these.
    ///
    /// # Errors
    ///
    /// [`KeyError`] for another encoding or a bad point.
    pub fn from_legacy(curve: Curve, text: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_sec1(curve, &base58btc(text)?)
    }

    /// A `publicKeyMultibase` of type `Multikey` (or the part of a
    /// `did:key` after the prefix): `z` + base58btc(multicodec ‖ point).
    ///
    /// # Errors
    ///
    /// [`KeyError`] for another encoding, curve or a bad point.
    pub fn from_multikey(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = base58btc(text)?;
        let (prefix, point) = bytes.split_at(bytes.len().min(2));
        if prefix == K256_PREFIX {
            PublicKey::from_sec1(Curve::K256, point)
        } else if prefix == P256_PREFIX {
            PublicKey::from_sec1(Curve::P256, point)
        } else {
            Err(KeyError::Type {
                prefix: prefix.to_vec(),
            })
        }
    }

    /// Whether `sig` (64 bytes, `r‖s`, low-S) signs the SHA-256 `digest`.
    pub fn verifies(&self, digest: &[u8; 32], sig: &[u8]) -> bool {
        match self {
            PublicKey::K256(key) => {
                let Ok(sig) = secp256k1::ecdsa::Signature::from_compact(sig) else {
                    return false;
                };
                let msg = secp256k1::Message::from_digest(*digest);
                secp().verify_ecdsa(&msg, &sig, key).is_ok()
            }
            PublicKey::P256(key) => {
                let Ok(sig) = p256::ecdsa::Signature::from_slice(sig) else {
                    return false;
                };
                // `normalize_s` answers the low-S form only when `s` was high.
                sig.normalize_s().is_none() && key.verify_prehash(digest, &sig).is_ok()
            }
        }
    }
}

/// Why a commit is not taken as the repository's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A block is missing, does not match its CID or does not decode.
    #[error(transparent)]
    Car {
        /// Why.
        #[from]
        source: CarError,
    },
    /// The commit block is not `{did, version, data, rev, sig}`.
    #[error("the commit block is malformed: {reason}")]
    Commit {
        /// What is wrong.
        reason: String,
    },
    /// The commit names another repository than the frame.
    #[error("the commit is signed for {signed}, not for the frame's repo {repo}")]
    WrongRepo {
        /// The commit's `did`.
        signed: String,
        /// The frame's `repo`.
        repo: String,
    },
    /// The signature does not verify with the repository's key.
    #[error("the commit signature does not verify with {did}'s signing key")]
    Signature {
        /// The repository.
        did: String,
    },
    /// A record is not in the signed tree with the CID the op gives.
    #[error("{path} is not in the signed repository tree with the CID the commit names")]
    NotInTree {
        /// The record path.
        path: String,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`VerifyError`].
    VerifyError => VerifyErrorKind { Car, Commit, WrongRepo, Signature, NotInTree }
}

/// A commit block, split into what is signed and the signature.
#[derive(Debug, Clone)]
pub struct SignedCommit {
    /// The repository.
    pub did: String,
    /// The MST root.
    pub data: Cid,
    /// The revision.
    pub rev: String,
    /// SHA-256 of the commit without `sig`, re-encoded as DAG-CBOR.
    pub digest: [u8; 32],
    /// The signature.
    pub sig: Vec<u8>,
}

fn malformed(reason: &str) -> VerifyError {
    VerifyError::Commit {
        reason: reason.to_string(),
    }
}

impl SignedCommit {
    /// The commit block `cid` of `blocks`, checked to belong to `repo`.
    ///
    /// # Errors
    ///
    /// [`VerifyError`] when the block is missing or malformed or names
    /// another repository.
    pub fn read(blocks: &Blocks, cid: &Cid, repo: &str) -> Result<SignedCommit, VerifyError> {
        let Ipld::Map(mut map) = blocks.ipld(cid)? else {
            return Err(malformed("not a map"));
        };
        let Some(Ipld::Bytes(sig)) = map.remove("sig") else {
            return Err(malformed("no `sig` bytes"));
        };
        let text = |key: &str| match map.get(key) {
            Some(Ipld::String(s)) => Ok(s.clone()),
            _ => Err(malformed(&format!("no `{key}` string"))),
        };
        let did = text("did")?;
        let rev = text("rev")?;
        let Some(Ipld::Link(data)) = map.get("data") else {
            return Err(malformed("no `data` link"));
        };
        let data = *data;
        if !matches!(map.get("version"), Some(Ipld::Integer(2 | 3))) {
            return Err(malformed("`version` is not 2 or 3"));
        }
        if did != repo {
            return Err(VerifyError::WrongRepo {
                signed: did,
                repo: repo.to_string(),
            });
        }
        let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(map))
            .map_err(|e| malformed(&format!("cannot re-encode: {e}")))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &unsigned);
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        Ok(SignedCommit {
            did,
            data,
            rev,
            digest: d,
            sig,
        })
    }

    /// Whether `key` signed it.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Signature`] when it did not.
    pub fn check(&self, key: &PublicKey) -> Result<(), VerifyError> {
        if key.verifies(&self.digest, &self.sig) {
            Ok(())
        } else {
            Err(VerifyError::Signature {
                did: self.did.clone(),
            })
        }
    }
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    l: Option<Cid>,
    e: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    p: usize,
    k: serde_bytes::ByteBuf,
    v: Cid,
    #[serde(default)]
    t: Option<Cid>,
}

/// The CID stored under `key` (`<collection>/<rkey>`) in the MST rooted at
/// `root`, walking only nodes present in `blocks`; `None` when the tree
/// proves it absent.
///
/// # Errors
///
/// [`VerifyError::Car`] when a node on the way is missing or not a node.
pub fn mst_get(blocks: &Blocks, root: &Cid, key: &str) -> Result<Option<Cid>, VerifyError> {
    let key = key.as_bytes();
    let mut at = *root;
    for _ in 0..MAX_MST_DEPTH {
        let node: Node =
            serde_ipld_dagcbor::from_slice(blocks.get(&at)?).map_err(|e| CarError::Decode {
                cid: at.to_string(),
                reason: e.to_string(),
            })?;
        let mut below = node.l;
        let mut prev: Vec<u8> = Vec::new();
        let mut next = None;
        let mut passed_all = true;
        for entry in &node.e {
            let Some(shared) = prev.get(..entry.p) else {
                return Err(
                    malformed("an MST entry shares more than the previous key").into_car(at)
                );
            };
            let mut full = shared.to_vec();
            full.extend_from_slice(&entry.k);
            match key.cmp(full.as_slice()) {
                std::cmp::Ordering::Equal => return Ok(Some(entry.v)),
                std::cmp::Ordering::Less => {
                    next = below;
                    passed_all = false;
                    break;
                }
                std::cmp::Ordering::Greater => {
                    below = entry.t;
                    prev = full;
                }
            }
        }
        if passed_all {
            next = below;
        }
        match next {
            Some(child) => at = child,
            None => return Ok(None),
        }
    }
    Err(malformed("the MST is deeper than any real repository").into_car(at))
}

impl VerifyError {
    fn into_car(self, at: Cid) -> VerifyError {
        VerifyError::Car {
            source: CarError::Decode {
                cid: at.to_string(),
                reason: self.to_string(),
            },
        }
    }
}
