//! The embedded server's users: one for the daemon, one for the CLI, one
//! per running operator, each with its permissions. The server's
//! `authorization` block is rendered from this table, at start and at
//! every reload.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::access::grants::{Permissions, SubjectRules};

/// One user of the embedded server.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Its password (random; never logged).
    pub password: String,
    /// `None`: everything (the daemon itself).
    pub permissions: Option<Permissions>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

/// The user table, shared by the server's config writer and the code that
/// grants and revokes operators' access.
#[derive(Debug, Default)]
pub struct Users {
    table: Mutex<BTreeMap<String, User>>,
}

/// The daemon's own user name.
pub const DAEMON_USER: &str = "sb-daemon";
/// The CLI's user name (in the runtime file).
pub const CLI_USER: &str = "sb-cli";
/// Operators' user names are this prefix and their id; the prefix keeps
/// them apart from the daemon's and the CLI's whatever the id.
pub const OPERATOR_USER_PREFIX: &str = "op-";

/// What the CLI may do: it is the administrator's client (whoever can read
/// the 0600 runtime file), so it may call the API, publish and read data,
/// and send control requests by hand; but it cannot read control requests
/// (they carry operators' configs with secrets) nor pose as an operator or
/// as the daemon (lifecycle, events, logs, answering the API: on
/// `sb.api.*`, and in cluster mode on `sb.host.<host>.api.*` and the
/// daemons' `sb.host.<host>.peer.*`).
pub fn cli_permissions() -> Permissions {
    Permissions {
        publish: SubjectRules {
            allow: vec![">".into()],
            deny: vec!["sb.op.>".into(), "sb.event.>".into(), "sb.log.>".into()],
        },
        subscribe: SubjectRules {
            allow: vec![">".into()],
            deny: vec!["sb.ctl.>".into(), "sb.api.>".into(), "sb.host.>".into()],
        },
        allow_responses: false,
    }
}

/// A fresh random password.
pub fn generate_password() -> String {
    let alphabet = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..32)
        .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
        .collect()
}

impl Users {
    /// Add or replace a user.
    pub fn set(&self, name: &str, user: User) {
        self.lock().insert(name.to_owned(), user);
    }

    /// Change a user's permissions, keeping its password; false when there
    /// is no such user.
    pub fn set_permissions(&self, name: &str, permissions: Option<Permissions>) -> bool {
        match self.lock().get_mut(name) {
            Some(u) if u.permissions != permissions => {
                u.permissions = permissions;
                true
            }
            _ => false,
        }
    }

    /// Remove a user; false when there was none.
    pub fn remove(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, User>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server config's `authorization` block. JSON, which the
    /// nats-server config syntax accepts, so every name and password is
    /// quoted by serde and nothing in them can be read as config syntax or
    /// a `$variable`.
    pub fn render(&self) -> String {
        #[derive(Serialize)]
        struct Entry<'a> {
            user: &'a str,
            password: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            permissions: Option<&'a Permissions>,
        }
        #[derive(Serialize)]
        struct Block<'a> {
            users: Vec<Entry<'a>>,
        }
        let table = self.lock();
        let block = Block {
            users: table
                .iter()
                .map(|(name, u)| Entry {
                    user: name,
                    password: &u.password,
                    permissions: u.permissions.as_ref(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&block).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_everything_and_debug_hides_passwords() {
        let users = Users::default();
        users.set(
            DAEMON_USER,
            User {
                password: "pw\"$x}".into(),
                permissions: None,
            },
        );
        users.set(
            CLI_USER,
            User {
                password: "cli-secret".into(),
                permissions: Some(cli_permissions()),
            },
        );
        let text = users.render();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["users"][1]["password"], "pw\"$x}");
        assert_eq!(
            v["users"][0]["permissions"]["subscribe"]["deny"][0],
            "sb.ctl.>"
        );
        assert!(!format!("{users:?}").contains("cli-secret"));
        assert!(users.set_permissions(CLI_USER, None));
        assert!(!users.set_permissions(CLI_USER, None));
        assert!(users.remove(CLI_USER));
        assert_eq!(users.len(), 1);
    }
}
