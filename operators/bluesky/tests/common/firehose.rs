//! Firehose frames made with the same crates the operator reads them with
//! (DAG-CBOR by serde_ipld_dagcbor, CAR by iroh-car), signed by keys made
//! here (k256 with libsecp256k1, p256 with RustCrypto), and a small relay
//! serving them on `/xrpc/com.atproto.sync.subscribeRepos` with the
//! reference server's cursor rules: with `cursor`, every frame after that
//! `seq` (an `#info OutdatedCursor` first when the cursor is older than
//! what it keeps, an error frame `FutureCursor` and a close when it is
//! ahead of the newest); without, live frames only.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::SinkExt;
use ipld_core::cid::multibase::{self, Base};
use ipld_core::cid::multihash::Multihash;
use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use super::pds::url_params;

pub const PATH: &str = "/xrpc/com.atproto.sync.subscribeRepos";
pub const DAG_CBOR: u64 = 0x71;

/// A signing key of either curve.
#[derive(Clone)]
pub enum Key {
    K256(secp256k1::SecretKey),
    P256(p256::ecdsa::SigningKey),
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b
}

impl Key {
    pub fn k256() -> Key {
        Key::K256(secp256k1::SecretKey::from_byte_array(&random32()).unwrap())
    }

    pub fn p256() -> Key {
        Key::P256(p256::ecdsa::SigningKey::from_slice(&random32()).unwrap())
    }

    /// `publicKeyMultibase` of the key (multicodec prefix + compressed point).
    pub fn multikey(&self) -> String {
        let mut bytes = Vec::new();
        match self {
            Key::K256(sk) => {
                let secp = secp256k1::Secp256k1::signing_only();
                bytes.extend_from_slice(&[0xe7, 0x01]);
                bytes.extend_from_slice(
                    &secp256k1::PublicKey::from_secret_key(&secp, sk).serialize(),
                );
            }
            Key::P256(sk) => {
                bytes.extend_from_slice(&[0x80, 0x24]);
                bytes.extend_from_slice(sk.verifying_key().to_encoded_point(true).as_bytes());
            }
        }
        multibase::encode(Base::Base58Btc, bytes)
    }

    /// The legacy `publicKeyMultibase`: base58btc of the uncompressed
    /// point, no multicodec prefix (the curve is in the method's type).
    pub fn legacy_multibase(&self) -> (&'static str, String) {
        match self {
            Key::K256(sk) => {
                let secp = secp256k1::Secp256k1::signing_only();
                let point =
                    secp256k1::PublicKey::from_secret_key(&secp, sk).serialize_uncompressed();
                (
                    "EcdsaSecp256k1VerificationKey2019",
                    multibase::encode(Base::Base58Btc, point),
                )
            }
            Key::P256(sk) => {
                let point = sk.verifying_key().to_encoded_point(false);
                (
                    "EcdsaSecp256r1VerificationKey2019",
                    multibase::encode(Base::Base58Btc, point.as_bytes()),
                )
            }
        }
    }

    /// 64-byte low-S signature of the SHA-256 of `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, data)
            .as_ref()
            .try_into()
            .unwrap();
        match self {
            Key::K256(sk) => {
                let secp = secp256k1::Secp256k1::signing_only();
                let msg = secp256k1::Message::from_digest(digest);
                secp.sign_ecdsa(&msg, sk).serialize_compact().to_vec()
            }
            Key::P256(sk) => {
                let sig: p256::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
                sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()
            }
        }
    }
}

/// A DID document naming `key` as `#atproto`.
pub fn did_doc(did: &str, key: &Key) -> Value {
    json!({
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "alsoKnownAs": [format!("at://{}.test", did.rsplit(':').next().unwrap())],
        "verificationMethod": [{"id": format!("{did}#atproto"), "type": "Multikey",
            "controller": did, "publicKeyMultibase": key.multikey()}],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "http://127.0.0.1:1"}]
    })
}

/// A DID document in the legacy form older PLC directories serve.
pub fn legacy_did_doc(did: &str, key: &Key) -> Value {
    let (kind, multibase) = key.legacy_multibase();
    json!({
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "verificationMethod": [{"id": "#atproto", "type": kind,
            "controller": did, "publicKeyMultibase": multibase}],
    })
}

pub fn cid_of(bytes: &[u8]) -> Cid {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    Cid::new_v1(
        DAG_CBOR,
        Multihash::<64>::wrap(0x12, digest.as_ref()).unwrap(),
    )
}

/// JSON (ATProto data model) to IPLD: `{"$link"}` becomes a link.
pub fn ipld(v: &Value) -> Ipld {
    match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => Ipld::Integer(n.as_i64().unwrap().into()),
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(a) => Ipld::List(a.iter().map(ipld).collect()),
        Value::Object(m) => {
            if let (1, Some(Value::String(l))) = (m.len(), m.get("$link")) {
                return Ipld::Link(l.parse().unwrap());
            }
            Ipld::Map(m.iter().map(|(k, v)| (k.clone(), ipld(v))).collect())
        }
    }
}

pub fn encode(v: &Ipld) -> Vec<u8> {
    serde_ipld_dagcbor::to_vec(v).unwrap()
}

/// What to spoil in a commit, for the tests of what is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Spoil {
    #[default]
    Nothing,
    /// Signed by another key than the DID document's.
    WrongKey,
    /// The record block replaced by other bytes (CID no longer matches).
    SwappedRecord,
    /// The CAR cut in the middle of a block.
    TruncatedCar,
    /// The op names a record the signed tree does not hold.
    NotInTree,
}

/// One created record: collection, rkey, JSON record.
pub type Create = (String, String, Value);

/// A `#commit` frame by `did` (signed with `key`) creating `records`.
pub async fn commit_frame(
    seq: i64,
    did: &str,
    key: &Key,
    records: &[Create],
    spoil: Spoil,
) -> Vec<u8> {
    let mut blocks: Vec<(Cid, Vec<u8>)> = Vec::new();
    let mut entries: BTreeMap<String, Cid> = BTreeMap::new();
    let mut ops = Vec::new();
    for (collection, rkey, record) in records {
        let bytes = encode(&ipld(record));
        let cid = cid_of(&bytes);
        let path = format!("{collection}/{rkey}");
        entries.insert(path.clone(), cid);
        ops.push(Ipld::Map(BTreeMap::from([
            ("action".to_string(), Ipld::String("create".into())),
            ("path".to_string(), Ipld::String(path)),
            ("cid".to_string(), Ipld::Link(cid)),
        ])));
        let bytes = if spoil == Spoil::SwappedRecord {
            encode(&ipld(&json!({"$type": collection, "text": "swapped"})))
        } else {
            bytes
        };
        blocks.push((cid, bytes));
    }
    if spoil == Spoil::NotInTree {
        let other = cid_of(b"something else");
        for v in entries.values_mut() {
            *v = other;
        }
    }
    // A one-node MST: every key in the root, in order.
    let mst = Ipld::Map(BTreeMap::from([
        ("l".to_string(), Ipld::Null),
        (
            "e".to_string(),
            Ipld::List(
                entries
                    .iter()
                    .map(|(k, v)| {
                        Ipld::Map(BTreeMap::from([
                            ("p".to_string(), Ipld::Integer(0)),
                            ("k".to_string(), Ipld::Bytes(k.as_bytes().to_vec())),
                            ("v".to_string(), Ipld::Link(*v)),
                            ("t".to_string(), Ipld::Null),
                        ]))
                    })
                    .collect(),
            ),
        ),
    ]));
    let mst_bytes = encode(&mst);
    let mst_cid = cid_of(&mst_bytes);
    blocks.push((mst_cid, mst_bytes));
    let rev = format!("3l{seq:011}");
    let mut commit = BTreeMap::from([
        ("did".to_string(), Ipld::String(did.into())),
        ("version".to_string(), Ipld::Integer(3)),
        ("data".to_string(), Ipld::Link(mst_cid)),
        ("rev".to_string(), Ipld::String(rev.clone())),
        ("prev".to_string(), Ipld::Null),
    ]);
    let unsigned = encode(&Ipld::Map(commit.clone()));
    let sig = if spoil == Spoil::WrongKey {
        Key::k256().sign(&unsigned)
    } else {
        key.sign(&unsigned)
    };
    commit.insert("sig".into(), Ipld::Bytes(sig));
    let commit_bytes = encode(&Ipld::Map(commit));
    let commit_cid = cid_of(&commit_bytes);
    blocks.insert(0, (commit_cid, commit_bytes));
    let mut writer =
        iroh_car::CarWriter::new(iroh_car::CarHeader::new_v1(vec![commit_cid]), Vec::new());
    for (cid, data) in &blocks {
        writer.write(*cid, data).await.unwrap();
    }
    let mut car = writer.finish().await.unwrap();
    if spoil == Spoil::TruncatedCar {
        car.truncate(car.len() - 10);
    }
    let body = Ipld::Map(BTreeMap::from([
        ("seq".to_string(), Ipld::Integer(seq.into())),
        ("rebase".to_string(), Ipld::Bool(false)),
        ("tooBig".to_string(), Ipld::Bool(false)),
        ("repo".to_string(), Ipld::String(did.into())),
        ("commit".to_string(), Ipld::Link(commit_cid)),
        ("rev".to_string(), Ipld::String(rev)),
        ("since".to_string(), Ipld::Null),
        ("blocks".to_string(), Ipld::Bytes(car)),
        ("ops".to_string(), Ipld::List(ops)),
        ("blobs".to_string(), Ipld::List(vec![])),
        (
            "time".to_string(),
            Ipld::String("2026-06-01T00:00:00.000Z".into()),
        ),
    ]));
    message("#commit", &body)
}

/// A message frame: header `{op: 1, t}` then `body`.
pub fn message(t: &str, body: &Ipld) -> Vec<u8> {
    let header = Ipld::Map(BTreeMap::from([
        ("op".to_string(), Ipld::Integer(1)),
        ("t".to_string(), Ipld::String(t.into())),
    ]));
    let mut out = encode(&header);
    out.extend(encode(body));
    out
}

/// An error frame: header `{op: -1}` then `{error, message}`.
pub fn error_frame(error: &str, text: &str) -> Vec<u8> {
    let header = Ipld::Map(BTreeMap::from([("op".to_string(), Ipld::Integer(-1))]));
    let mut out = encode(&header);
    out.extend(encode(&Ipld::Map(BTreeMap::from([
        ("error".to_string(), Ipld::String(error.into())),
        ("message".to_string(), Ipld::String(text.into())),
    ]))));
    out
}

/// An `#identity` frame.
pub fn identity_frame(seq: i64, did: &str) -> Vec<u8> {
    message(
        "#identity",
        &Ipld::Map(BTreeMap::from([
            ("seq".to_string(), Ipld::Integer(seq.into())),
            ("did".to_string(), Ipld::String(did.into())),
            (
                "time".to_string(),
                Ipld::String("2026-06-01T00:00:00.000Z".into()),
            ),
        ])),
    )
}

/// A post mentioning `me`.
pub fn mention(me: &str, text: &str) -> Value {
    json!({"$type": "app.bsky.feed.post", "text": format!("@bot.test {text}"), "langs": ["en"],
        "createdAt": "2026-06-01T00:00:00.000Z",
        "facets": [{"index": {"byteStart": 0, "byteEnd": 9},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": me}]}]})
}

#[derive(Default)]
struct State {
    /// (seq, frame bytes), oldest first.
    frames: Vec<(Option<i64>, Vec<u8>)>,
    /// The query string of each connection.
    connections: Vec<String>,
    /// Frames older than this seq are gone (OutdatedCursor).
    oldest: i64,
    cut_after: Option<usize>,
}

/// The relay.
#[derive(Clone)]
pub struct Relay {
    /// `ws://…` without the path.
    pub url: String,
    state: Arc<Mutex<State>>,
    more: Arc<Notify>,
}

impl Relay {
    pub async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            url: format!("ws://{}", listener.local_addr().unwrap()),
            state: Arc::default(),
            more: Arc::new(Notify::new()),
        };
        let server = relay.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream).await });
            }
        });
        relay
    }

    pub fn connections(&self) -> Vec<String> {
        self.state.lock().unwrap().connections.clone()
    }

    /// Appends a frame with sequence number `seq` (None for info frames).
    pub fn push(&self, seq: Option<i64>, frame: Vec<u8>) {
        self.state.lock().unwrap().frames.push((seq, frame));
        self.more.notify_waiters();
    }

    /// Frames before `seq` are no longer kept.
    pub fn forget_before(&self, seq: i64) {
        self.state.lock().unwrap().oldest = seq;
    }

    /// The connection is dropped (no close frame) after `n` more frames.
    pub fn cut_after(&self, n: usize) {
        self.state.lock().unwrap().cut_after = Some(n);
    }

    fn newest(&self) -> i64 {
        self.state
            .lock()
            .unwrap()
            .frames
            .iter()
            .filter_map(|f| f.0)
            .max()
            .unwrap_or(0)
    }

    #[allow(clippy::result_large_err)]
    async fn serve(&self, stream: tokio::net::TcpStream) {
        let mut path = String::new();
        let mut query = String::new();
        let callback = |req: &Request, resp: Response| {
            path = req.uri().path().to_string();
            query = req.uri().query().unwrap_or("").to_string();
            Ok(resp)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
            return;
        };
        if path != PATH {
            let _ = ws.close(None).await;
            return;
        }
        let cursor: Option<i64> = url_params(&query)
            .iter()
            .find(|(k, _)| k == "cursor")
            .and_then(|(_, v)| v.parse().ok());
        let newest = self.newest();
        let (mut next, oldest) = {
            let mut s = self.state.lock().unwrap();
            s.connections.push(query.clone());
            let oldest = s.oldest;
            let next = match cursor {
                Some(c) => s
                    .frames
                    .iter()
                    .position(|f| f.0.is_some_and(|seq| seq > c && seq >= oldest))
                    .unwrap_or(s.frames.len()),
                None => s.frames.len(),
            };
            (next, oldest)
        };
        if let Some(c) = cursor {
            if c > newest {
                let _ = ws
                    .send(Message::binary(error_frame(
                        "FutureCursor",
                        "Cursor in the future.",
                    )))
                    .await;
                let _ = ws.close(None).await;
                return;
            }
            if c + 1 < oldest {
                let info = message(
                    "#info",
                    &Ipld::Map(BTreeMap::from([
                        ("name".to_string(), Ipld::String("OutdatedCursor".into())),
                        (
                            "message".to_string(),
                            Ipld::String(
                                "Requested cursor exceeded limit. Possibly missing events".into(),
                            ),
                        ),
                    ])),
                );
                if ws.send(Message::binary(info)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let notified = self.more.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            loop {
                let item = {
                    let mut s = self.state.lock().unwrap();
                    let Some(f) = s.frames.get(next).cloned() else {
                        break;
                    };
                    next += 1;
                    match s.cut_after {
                        Some(0) => {
                            s.cut_after = None;
                            return;
                        }
                        Some(n) => s.cut_after = Some(n - 1),
                        None => {}
                    }
                    f.1
                };
                if ws.send(Message::binary(item)).await.is_err() {
                    return;
                }
            }
            notified.await;
        }
    }
}
