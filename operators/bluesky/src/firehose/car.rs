//! The CAR file of a `#commit` (`blocks`): read with iroh-car, every block
//! checked against its CID (iroh-car only splits the file; a block whose
//! bytes do not hash to its CID would let a relay swap a record under a
//! valid signature), then looked up by CID. Records are DAG-CBOR and
//! become JSON in the ATProto data model's JSON form (links as
//! `{"$link": cid}`, bytes as `{"$bytes": base64}`), the form the other
//! strategies receive from the server.

use std::collections::HashMap;

use base64::Engine as _;
use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;
use serde_json::{Map, Value};

/// Multihash code of SHA-256, the only hash ATProto repositories use.
pub const SHA2_256: u64 = 0x12;

/// Why the blocks could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarError {
    /// Not a CAR v1 file, or cut short.
    #[error("the commit's CAR does not read: {reason}")]
    Read {
        /// iroh-car's words.
        reason: String,
    },
    /// A block's bytes do not hash to its CID.
    #[error("block {cid} does not match its CID")]
    Hash {
        /// The CID.
        cid: String,
    },
    /// A block the commit needs is not in the file.
    #[error("block {cid} is missing from the commit's CAR")]
    Missing {
        /// The CID.
        cid: String,
    },
    /// A block is not DAG-CBOR.
    #[error("block {cid} is not DAG-CBOR: {reason}")]
    Decode {
        /// The CID.
        cid: String,
        /// The decoder's words.
        reason: String,
    },
}

switchboard_bus::proto::error_kinds! {
    /// Coarse classes of [`CarError`].
    CarError => CarErrorKind { Read, Hash, Missing, Decode }
}

/// The blocks of one commit, by CID, each checked.
#[derive(Debug, Default, Clone)]
pub struct Blocks {
    blocks: HashMap<Cid, Vec<u8>>,
}

impl Blocks {
    /// Reads a CAR v1 file.
    ///
    /// # Errors
    ///
    /// [`CarError::Read`] for a file that is not CAR or is cut inside a
    /// block; [`CarError::Hash`] for a block that is not what its CID
    /// says (or is hashed with anything but SHA-256).
    pub async fn read(car: &[u8]) -> Result<Blocks, CarError> {
        let read = |e: iroh_car::Error| CarError::Read {
            reason: e.to_string(),
        };
        let mut reader = iroh_car::CarReader::new(car).await.map_err(read)?;
        let mut blocks = HashMap::new();
        while let Some((cid, data)) = reader.next_block().await.map_err(read)? {
            let hash = cid.hash();
            let digest = ring::digest::digest(&ring::digest::SHA256, &data);
            if hash.code() != SHA2_256 || hash.digest() != digest.as_ref() {
                return Err(CarError::Hash {
                    cid: cid.to_string(),
                });
            }
            blocks.insert(cid, data);
        }
        Ok(Blocks { blocks })
    }

    /// The bytes of `cid`.
    ///
    /// # Errors
    ///
    /// [`CarError::Missing`] when the file does not have it.
    pub fn get(&self, cid: &Cid) -> Result<&[u8], CarError> {
        self.blocks
            .get(cid)
            .map(Vec::as_slice)
            .ok_or_else(|| CarError::Missing {
                cid: cid.to_string(),
            })
    }

    /// The block `cid`, decoded.
    ///
    /// # Errors
    ///
    /// [`CarError::Missing`] or [`CarError::Decode`].
    pub fn ipld(&self, cid: &Cid) -> Result<Ipld, CarError> {
        serde_ipld_dagcbor::from_slice(self.get(cid)?).map_err(|e| CarError::Decode {
            cid: cid.to_string(),
            reason: e.to_string(),
        })
    }

    /// How many blocks there are.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// A record in the ATProto data model's JSON form.
pub fn to_json(ipld: &Ipld) -> Value {
    match ipld {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => i64::try_from(*i)
            .map(Value::from)
            .or_else(|_| u64::try_from(*i).map(Value::from))
            .unwrap_or(Value::Null),
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(b) => {
            let mut m = Map::new();
            m.insert(
                "$bytes".into(),
                Value::String(base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)),
            );
            Value::Object(m)
        }
        Ipld::List(l) => Value::Array(l.iter().map(to_json).collect()),
        Ipld::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Ipld::Link(cid) => {
            let mut m = Map::new();
            m.insert("$link".into(), Value::String(cid.to_string()));
            Value::Object(m)
        }
    }
}
