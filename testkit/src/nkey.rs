//! Fresh nkey users for auth tests: the server is given the public key
//! ([`crate::NatsServerOptions::nkeys`]), the client a file with the seed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// A new nkey user key pair (public key `U…`, seed `SU…`).
///
/// ```no_run
/// use switchboard_testkit::{NatsServer, NatsServerOptions, NkeyUser};
///
/// let user = NkeyUser::new();
/// let server = NatsServer::start_with(NatsServerOptions {
///     nkeys: vec![user.public_key().to_string()],
///     ..Default::default()
/// })
/// .expect("nats-server");
/// let dir = tempfile::tempdir().expect("tempdir");
/// let seed_file = dir.path().join("op.nk");
/// user.write_seed_file(&seed_file).expect("seed file");
/// ```
pub struct NkeyUser {
    public_key: String,
    seed: String,
}

impl std::fmt::Debug for NkeyUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Test seeds are throwaway, but a Debug that prints seeds is a
        // habit nobody should copy.
        f.debug_struct("NkeyUser")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl NkeyUser {
    /// Generate a new user key pair.
    pub fn new() -> NkeyUser {
        let pair = nkeys::KeyPair::new_user();
        NkeyUser {
            public_key: pair.public_key(),
            // Only a pair made from a public key alone lacks a seed.
            seed: pair.seed().expect("a generated key pair has a seed"),
        }
    }

    /// The public key (`U…`), what the server's config lists.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The seed (`SU…`), the secret the client signs with.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// Write the seed to `path` (mode 0600, a trailing newline as `nsc`
    /// writes it), for `BusOptions::nkey_file` or `SWITCHBOARD_NATS_NKEY`.
    pub fn write_seed_file(&self, path: &Path) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(file, "{}", self.seed)
    }
}

impl Default for NkeyUser {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_holds_the_seed_of_the_public_key() {
        let user = NkeyUser::new();
        assert!(user.public_key().starts_with('U'), "{user:?}");
        assert!(!format!("{user:?}").contains(user.seed()));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("user.nk");
        user.write_seed_file(&path).expect("written");
        let text = std::fs::read_to_string(&path).expect("read");
        let pair = nkeys::KeyPair::from_seed(text.trim()).expect("a seed");
        assert_eq!(pair.public_key(), user.public_key());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("stat").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
