//! Who may do what on the bus: each operator's own NATS identity and its
//! server-enforced permissions.
//!
//! With the embedded server, every start of an operator gets a fresh user
//! (`op-<id>`, random password) whose permissions come from its manifest
//! ([`grants`]); the server's config is reloaded (never restarted) before
//! the process starts, and again when the operator is removed, so the
//! previous process's password, and anything it left running, stops
//! working. The daemon and the CLI have users of their own; the daemon's
//! login never reaches an operator.
//!
//! With an external NATS the administrator owns the accounts: an operator
//! gets the manifest's `nats_creds` file (a `.creds` for its own user) or
//! `nats_nkey` seed file, or no credentials at all; never the daemon's.

pub mod grants;

use std::path::PathBuf;
use std::sync::Arc;

use switchboard_proto::{launch, OperatorId};

use crate::manifest::Manifest;
use crate::nats_server::{
    generate_password, ReloadError, Reloader, User, Users, OPERATOR_USER_PREFIX,
};
use grants::{operator_permissions, GrantError};

/// How operators reach the bus.
#[derive(Debug, Clone)]
pub enum Access {
    /// The daemon runs the server and issues users.
    Embedded(EmbeddedAccess),
    /// Someone else runs it; manifests bring their own creds.
    External(ExternalAccess),
}

/// [`Access::Embedded`].
#[derive(Debug, Clone)]
pub struct EmbeddedAccess {
    /// The server's URL.
    pub url: String,
    /// CA operators must trust (when the server has TLS).
    pub tls_ca: Option<PathBuf>,
    /// The server's user table.
    pub users: Arc<Users>,
    /// Applies table changes.
    pub reloader: Reloader,
    /// The durable stream's name, when the daemon keeps one.
    pub stream: Option<String>,
    /// Cluster mode: this host's name. Its server maps `sb.api.<method>`
    /// to `sb.host.<host>.api.<method>` *before* it checks the
    /// publisher's permissions (nats-server applies a client's subject
    /// mapping as it parses the message), so an `api` grant must allow
    /// the mapped subject too, or the request is refused as a permissions
    /// violation and the operator sees only a timeout.
    pub cluster_host: Option<String>,
}

/// [`Access::External`].
#[derive(Debug, Clone)]
pub struct ExternalAccess {
    /// The servers' URLs.
    pub url: String,
    /// CA operators must trust.
    pub tls_ca: Option<PathBuf>,
    /// The durable stream's name, when the daemon keeps one.
    pub stream: Option<String>,
}

/// Why an operator could not be given access.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A grant in its manifest cannot be expressed.
    #[error("operator `{id}`: {source} (in {})", path.display())]
    Grant {
        /// The operator.
        id: OperatorId,
        /// Its manifest.
        path: PathBuf,
        /// The first bad grant.
        source: GrantError,
    },
    /// The server did not take the new user.
    #[error("operator `{id}`: cannot give it a NATS user: {source}")]
    Reload {
        /// The operator.
        id: OperatorId,
        /// Why.
        source: ReloadError,
    },
    /// `nats_creds`/`nats_nkey` set while the daemon runs the server
    /// itself.
    #[error(
        "operator `{id}`: `nats_creds` and `nats_nkey` are for an external NATS ([nats] url); \
         the embedded server gives every operator its own user: remove it from {}",
        path.display()
    )]
    CredsWithEmbedded {
        /// The operator.
        id: OperatorId,
        /// Its manifest.
        path: PathBuf,
    },
    /// The creds or nkey file is not there.
    #[error("operator `{id}`: cannot read its NATS credentials file {}: {source}", file.display())]
    CredsUnreadable {
        /// The operator.
        id: OperatorId,
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl AccessError {
    /// What kind of failure.
    pub fn kind(&self) -> AccessErrorKind {
        match self {
            AccessError::Grant { .. } => AccessErrorKind::Grant,
            AccessError::Reload { .. } => AccessErrorKind::Server,
            AccessError::CredsWithEmbedded { .. } | AccessError::CredsUnreadable { .. } => {
                AccessErrorKind::Creds
            }
        }
    }

    /// Whether retrying later may help (the server may come back); a bad
    /// manifest does not fix itself.
    pub fn is_transient(&self) -> bool {
        self.kind() == AccessErrorKind::Server
    }
}

/// The kinds of [`AccessError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessErrorKind {
    /// A manifest grant.
    Grant,
    /// The server.
    Server,
    /// The manifest's creds file.
    Creds,
}

/// The user name of operator `id` on the embedded server.
pub fn operator_user(id: &OperatorId) -> String {
    format!("{OPERATOR_USER_PREFIX}{id}")
}

impl Access {
    /// The URL(s) operators are given.
    pub fn url(&self) -> &str {
        match self {
            Access::Embedded(e) => &e.url,
            Access::External(e) => &e.url,
        }
    }

    /// The durable stream's name, when the daemon keeps one.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Access::Embedded(e) => e.stream.as_deref(),
            Access::External(e) => e.stream.as_deref(),
        }
    }

    /// Record the durable stream's name (known once the daemon is
    /// connected and has ensured it).
    pub fn set_stream(&mut self, stream: Option<String>) {
        match self {
            Access::Embedded(e) => e.stream = stream,
            Access::External(e) => e.stream = stream,
        }
    }

    /// Whether the daemon runs the server.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Access::Embedded(_))
    }

    /// Give a new process of `manifest`'s operator its access, and return
    /// the launch variables that carry it (URL, credentials, TLS CA, inbox
    /// prefix). With the embedded server this replaces the operator's
    /// password (the previous process loses its connection) and returns
    /// once the server has loaded the new user.
    ///
    /// # Errors
    ///
    /// [`AccessError`]: a grant that does not translate, a server that did
    /// not take the user, a `nats_creds` that cannot be used.
    pub async fn grant(
        &self,
        manifest: &Manifest,
    ) -> Result<Vec<(&'static str, String)>, AccessError> {
        let id = &manifest.id;
        let mut env = vec![
            (launch::NATS_URL, self.url().to_owned()),
            (launch::NATS_INBOX_PREFIX, grants::inbox_prefix(id)),
        ];
        if let Some(stream) = self.stream() {
            env.push((launch::STREAM, stream.to_owned()));
        }
        match self {
            Access::Embedded(e) => {
                if manifest.nats_creds.is_some() || manifest.nats_nkey.is_some() {
                    return Err(AccessError::CredsWithEmbedded {
                        id: id.clone(),
                        path: manifest.path.clone(),
                    });
                }
                let (permissions, errors) =
                    permissions_of(manifest, e.stream.as_deref(), e.cluster_host.as_deref());
                if let Some(source) = errors.into_iter().next() {
                    return Err(AccessError::Grant {
                        id: id.clone(),
                        path: manifest.path.clone(),
                        source,
                    });
                }
                let user = operator_user(id);
                let password = generate_password();
                e.users.set(
                    &user,
                    User {
                        password: password.clone(),
                        permissions: Some(permissions),
                    },
                );
                e.reloader
                    .reload()
                    .await
                    .map_err(|source| AccessError::Reload {
                        id: id.clone(),
                        source,
                    })?;
                env.push((launch::NATS_USER, user));
                env.push((launch::NATS_PASSWORD, password));
                if let Some(ca) = &e.tls_ca {
                    env.push((launch::NATS_TLS_CA, ca.display().to_string()));
                }
            }
            Access::External(e) => {
                for (file, var) in [
                    (&manifest.nats_creds, launch::NATS_CREDS),
                    (&manifest.nats_nkey, launch::NATS_NKEY),
                ] {
                    let Some(file) = file else { continue };
                    if let Err(source) = std::fs::metadata(file) {
                        return Err(AccessError::CredsUnreadable {
                            id: id.clone(),
                            file: file.clone(),
                            source,
                        });
                    }
                    env.push((var, file.display().to_string()));
                }
                if let Some(ca) = &e.tls_ca {
                    env.push((launch::NATS_TLS_CA, ca.display().to_string()));
                }
            }
        }
        Ok(env)
    }

    /// Apply changed grants to a running operator's user (same password,
    /// connection kept). Nothing to do with an external server.
    ///
    /// # Errors
    ///
    /// As [`Access::grant`].
    pub async fn update(&self, manifest: &Manifest) -> Result<(), AccessError> {
        let Access::Embedded(e) = self else {
            return Ok(());
        };
        let (permissions, errors) =
            permissions_of(manifest, e.stream.as_deref(), e.cluster_host.as_deref());
        if let Some(source) = errors.into_iter().next() {
            return Err(AccessError::Grant {
                id: manifest.id.clone(),
                path: manifest.path.clone(),
                source,
            });
        }
        if e.users
            .set_permissions(&operator_user(&manifest.id), Some(permissions))
        {
            e.reloader
                .reload()
                .await
                .map_err(|source| AccessError::Reload {
                    id: manifest.id.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Take operator `id`'s access away (its process is gone, or it was
    /// removed): the server disconnects whatever still uses it. Without
    /// `wait`, returns at once (the next grant's reload covers it anyway).
    pub async fn revoke(&self, id: &OperatorId, wait: bool) {
        let Access::Embedded(e) = self else {
            return;
        };
        // Already gone: nothing to apply, unless the caller wants to know
        // that the removal (perhaps asked for without waiting) is applied.
        if !e.users.remove(&operator_user(id)) && !wait {
            return;
        }
        let reloader = e.reloader.clone();
        let id = id.clone();
        let job = async move {
            match reloader.reload().await {
                Ok(()) => {}
                // The server is stopping with the daemon: nobody to revoke from.
                Err(err) if err.kind() == crate::nats_server::ReloadErrorKind::NotRunning => {
                    tracing::debug!(operator = %id, error = %err, "NATS user not revoked: server stopped");
                }
                Err(err) => {
                    tracing::warn!(operator = %id, error = %err, "NATS user not revoked yet")
                }
            }
        };
        if wait {
            job.await;
        } else {
            tokio::spawn(job);
        }
    }
}

/// The operator's permissions on this host's server; in cluster mode
/// (`cluster_host`) its `api` grants also allow the subjects the server
/// maps them to (see [`EmbeddedAccess::cluster_host`]).
fn permissions_of(
    manifest: &Manifest,
    stream: Option<&str>,
    cluster_host: Option<&str>,
) -> (grants::Permissions, Vec<GrantError>) {
    let (mut permissions, errors) = operator_permissions(
        &manifest.id,
        &manifest.publish,
        &manifest.subscribe,
        &manifest.api,
        stream.map(|name| (name, manifest.stream.as_slice())),
    );
    if let Some(host) = cluster_host {
        for a in &manifest.api {
            permissions
                .publish
                .allow
                .push(crate::cluster::host_api_subject(host, a.method()));
        }
    }
    (permissions, errors)
}
