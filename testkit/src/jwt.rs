//! NATS JWT ("decentralized") auth for tests: an operator, one account it
//! signed, and users the account signed, each written as a `.creds` file.
//!
//! What `nsc` would make, built here so a test needs no extra tool: a
//! server in operator mode trusts the operator's JWT and finds the
//! account's JWT in a memory resolver ([`JwtOperator::server_config`]);
//! a client proves it is a user with the user's JWT and a signature by
//! the user's nkey, both read from a `.creds` file
//! ([`JwtUser::write_creds_file`]).
//!
//! The layout follows nats-io/jwt v2: header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, claims `jti`/`iat`/`iss`/`sub`/
//! `name` and a `nats` object with `type` and `version: 2`; each part
//! base64url without padding; the signature is ed25519 by the issuer's
//! nkey over `header.payload`. Accounts and users are unlimited (`-1`):
//! a missing limit reads as 0 on the server, which lets nobody in.
//!
//! ```no_run
//! use switchboard_testkit::{JwtOperator, NatsServer, NatsServerOptions};
//!
//! let op = JwtOperator::new("test").expect("JWTs");
//! let server = NatsServer::start_with(NatsServerOptions {
//!     extra_config: op.server_config(),
//!     no_jetstream: true,
//!     ..Default::default()
//! })
//! .expect("nats-server");
//! let dir = tempfile::tempdir().expect("tempdir");
//! let creds = dir.path().join("bot.creds");
//! op.user("bot").expect("a user").write_creds_file(&creds).expect("written");
//! ```

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::{json, Value};

/// Why a JWT could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The issuer's nkey could not sign (a key pair without a seed).
    #[error("cannot sign the {what} JWT: {source}")]
    Sign {
        /// Which JWT (`operator`, `account`, `user`).
        what: &'static str,
        /// What nkeys said.
        source: nkeys::error::Error,
    },
}

/// An operator with one account, both signed; issues users of that
/// account (see the module docs).
pub struct JwtOperator {
    operator_public_key: String,
    account: KeyPair,
    operator_jwt: String,
    account_jwt: String,
}

impl std::fmt::Debug for JwtOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are throwaway, but a Debug that prints seeds is a habit
        // nobody should copy.
        f.debug_struct("JwtOperator")
            .field("operator", &self.operator_public_key)
            .field("account", &self.account.public_key())
            .finish_non_exhaustive()
    }
}

impl JwtOperator {
    /// A fresh operator (self-signed) and account (signed by it), both
    /// named after `name`.
    pub fn new(name: &str) -> Result<JwtOperator, JwtError> {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let operator_jwt = sign(
            "operator",
            &operator,
            &operator.public_key(),
            name,
            json!({ "type": "operator", "version": 2 }),
        )?;
        let account_jwt = sign(
            "account",
            &operator,
            &account.public_key(),
            &format!("{name}-account"),
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1,
                    "imports": -1, "exports": -1, "wildcards": true,
                    "conn": -1, "leaf": -1,
                },
                "default_permissions": { "pub": {}, "sub": {} },
                "type": "account",
                "version": 2,
            }),
        )?;
        Ok(JwtOperator {
            operator_public_key: operator.public_key(),
            account,
            operator_jwt,
            account_jwt,
        })
    }

    /// The operator's JWT, what the server trusts.
    pub fn operator_jwt(&self) -> &str {
        &self.operator_jwt
    }

    /// The account's JWT (signed by the operator).
    pub fn account_jwt(&self) -> &str {
        &self.account_jwt
    }

    /// The account's public key (`A…`).
    pub fn account_public_key(&self) -> String {
        self.account.public_key()
    }

    /// nats-server config text for operator mode with this operator and
    /// its account preloaded in a memory resolver, for
    /// [`crate::NatsServerOptions::extra_config`]. Use it without
    /// `authorization` options (operator mode replaces them) and with
    /// `no_jetstream` (the account has no JetStream limits).
    pub fn server_config(&self) -> String {
        format!(
            "operator: \"{}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n}}\n",
            self.operator_jwt,
            self.account.public_key(),
            self.account_jwt
        )
    }

    /// A new user of the account: a fresh nkey and a JWT the account
    /// signed for it, with no permission limits.
    pub fn user(&self, name: &str) -> Result<JwtUser, JwtError> {
        let user = KeyPair::new_user();
        let jwt = sign(
            "user",
            &self.account,
            &user.public_key(),
            name,
            json!({
                "pub": {}, "sub": {},
                "subs": -1, "data": -1, "payload": -1,
                "type": "user",
                "version": 2,
            }),
        )?;
        Ok(JwtUser {
            public_key: user.public_key(),
            // Only a pair made from a public key alone lacks a seed.
            seed: user.seed().expect("a generated key pair has a seed"),
            jwt,
        })
    }
}

/// A user's JWT and nkey seed: what a `.creds` file holds.
pub struct JwtUser {
    public_key: String,
    seed: String,
    jwt: String,
}

impl std::fmt::Debug for JwtUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtUser")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl JwtUser {
    /// The user's public key (`U…`), the JWT's subject.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The user's JWT (signed by the account).
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The user's nkey seed (`SU…`).
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// Write this user's `.creds` file (see [`write_creds_file`]).
    pub fn write_creds_file(&self, path: &Path) -> std::io::Result<()> {
        write_creds_file(path, &self.jwt, &self.seed)
    }
}

/// Write a `.creds` file in the layout `nsc` writes (mode 0600: it holds
/// the seed), for `BusOptions::creds_file`, `[nats] creds_file` or a
/// manifest's `nats_creds`.
pub fn write_creds_file(path: &Path, jwt: &str, seed: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    write!(
        file,
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A JWT with `issuer`'s signature: claims `sub`, `name`, `iss`, `iat`,
/// a unique `jti`, and `nats`.
///
/// nsc's `jti` is a hash of the claims; the server never recomputes it
/// (it is an id, not a check), so a unique id does.
fn sign(
    what: &'static str,
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    nats: Value,
) -> Result<String, JwtError> {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = json!({
        "jti": nuid::next().to_string(),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = b64(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|source| JwtError::Sign { what, source })?;
    Ok(format!("{signed}.{}", b64(&signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jwt: &str) -> Value {
        let payload = jwt.split('.').nth(1).expect("three parts");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON claims")
    }

    fn verifies(jwt: &str, issuer: &str) -> bool {
        let (signed, sig) = jwt.rsplit_once('.').expect("a signature");
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .expect("base64url");
        KeyPair::from_public_key(issuer)
            .expect("a public key")
            .verify(signed.as_bytes(), &sig)
            .is_ok()
    }

    #[test]
    fn chain_of_signatures_operator_account_user() {
        let op = JwtOperator::new("t").expect("JWTs");
        let o = claims(op.operator_jwt());
        assert_eq!(o["iss"], o["sub"], "self-signed: {o}");
        assert_eq!(o["nats"]["type"], "operator");
        let issuer = o["iss"].as_str().expect("iss");
        assert!(issuer.starts_with('O'), "{o}");
        assert!(verifies(op.operator_jwt(), issuer));

        let a = claims(op.account_jwt());
        assert_eq!(a["iss"], o["sub"]);
        assert_eq!(a["sub"], op.account_public_key().as_str());
        assert_eq!(a["nats"]["version"], 2);
        assert_eq!(a["nats"]["limits"]["conn"], -1);
        assert!(verifies(op.account_jwt(), issuer));
        assert!(!verifies(op.account_jwt(), &op.account_public_key()));

        let user = op.user("bot").expect("user");
        let u = claims(user.jwt());
        assert_eq!(u["iss"], op.account_public_key().as_str());
        assert_eq!(u["sub"], user.public_key());
        assert_eq!(u["nats"]["type"], "user");
        assert!(verifies(user.jwt(), &op.account_public_key()));
        assert_ne!(u["jti"], a["jti"]);
        assert!(!format!("{user:?}{op:?}").contains(user.seed()));
        let config = op.server_config();
        assert!(config.contains(op.operator_jwt()), "{config}");
        assert!(config.contains(&op.account_public_key()), "{config}");
    }

    #[test]
    fn creds_file_holds_jwt_and_seed_privately() {
        let op = JwtOperator::new("t").expect("JWTs");
        let user = op.user("bot").expect("user");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bot.creds");
        user.write_creds_file(&path).expect("written");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        let after = |marker: &str| {
            let i = lines.iter().position(|l| l.contains(marker)).expect(marker);
            lines[i + 1]
        };
        assert_eq!(after("BEGIN NATS USER JWT"), user.jwt());
        assert_eq!(after("BEGIN USER NKEY SEED"), user.seed());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("stat").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
