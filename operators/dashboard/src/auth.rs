//! Who is asking: a browser logs in once with the token (or the viewer
//! token) and gets a cookie; scripts may send `Authorization: Bearer`.
//!
//! The cookie is `HttpOnly` (page scripts cannot read it), `SameSite=Strict`
//! (another site's page cannot make the browser send it, so no request
//! forgery) and holds no token: its value is an HMAC of the role keyed with
//! the token, so it proves the browser once had the token, keeps working
//! across dashboard restarts (login once per browser), and stops working
//! the moment the token changes. Its name carries the port: cookies are
//! per host, not per port, and two dashboards on 127.0.0.1 must not log
//! each other out.

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use serde::Serialize;

use crate::config::Secret;

/// What a login allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every view, no button.
    Viewer,
    /// Everything: control verbs and publishing as well.
    Admin,
}

impl Role {
    fn purpose(self) -> &'static [u8] {
        match self {
            Role::Viewer => b"switchboard-dashboard session: viewer",
            Role::Admin => b"switchboard-dashboard session: admin",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Role::Viewer => "v.",
            Role::Admin => "a.",
        }
    }
}

/// How long a browser stays logged in: 30 days.
pub const SESSION_SECS: u64 = 30 * 24 * 3600;

/// The tokens and the cookie's name.
#[derive(Debug, Clone)]
pub struct Auth {
    admin: Option<Secret>,
    viewer: Option<Secret>,
    cookie: String,
}

impl Auth {
    /// Logins with `admin` and `viewer` for a dashboard on `port`.
    pub fn new(admin: Option<Secret>, viewer: Option<Secret>, port: u16) -> Auth {
        Auth {
            admin,
            viewer,
            cookie: format!("switchboard_dashboard_{port}"),
        }
    }

    /// Whether anyone can log in at all.
    pub fn configured(&self) -> bool {
        self.admin.is_some() || self.viewer.is_some()
    }

    fn secret(&self, role: Role) -> Option<&Secret> {
        match role {
            Role::Admin => self.admin.as_ref(),
            Role::Viewer => self.viewer.as_ref(),
        }
    }

    /// The role `offered` (a token typed into the page) logs in as.
    pub fn login(&self, offered: &str) -> Option<Role> {
        [Role::Admin, Role::Viewer]
            .into_iter()
            .find(|r| self.secret(*r).is_some_and(|s| s.matches(offered)))
    }

    /// The `Set-Cookie` value that logs a browser in as `role`.
    pub fn session_cookie(&self, role: Role) -> Option<String> {
        let tag = tag(self.secret(role)?, role.purpose());
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
        Some(format!(
            "{}={}{value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}",
            self.cookie,
            role.prefix()
        ))
    }

    /// The `Set-Cookie` value that logs a browser out.
    pub fn logout_cookie(&self) -> String {
        format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            self.cookie
        )
    }

    /// Who sent these headers: a bearer token, else the session cookie.
    pub fn role(&self, headers: &HeaderMap) -> Option<Role> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return self.login(token);
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == self.cookie)
            .find_map(|(_, value)| self.check(value))
    }

    fn check(&self, value: &str) -> Option<Role> {
        let role = [Role::Admin, Role::Viewer]
            .into_iter()
            .find(|r| value.starts_with(r.prefix()))?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&value[2..])
            .ok()?;
        verify_tag(self.secret(role)?, role.purpose(), &tag).then_some(role)
    }
}

/// A MAC of `purpose` keyed with `secret`: a session cookie that proves
/// the browser once had the token without holding the token itself, and
/// stops working when the token changes.
fn tag(secret: &Secret, purpose: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    ring::hmac::sign(&key, purpose).as_ref().to_vec()
}

/// Whether `tag` is [`tag`] of `purpose` (in constant time).
fn verify_tag(secret: &Secret, purpose: &[u8], tag: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    ring::hmac::verify(&key, purpose, tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().expect("pair");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).expect("header"),
        );
        h
    }

    #[test]
    fn a_cookie_proves_the_token_without_holding_it() {
        let auth = Auth::new(Some(Secret::new("adm1n")), Some(Secret::new("v1ew")), 8477);
        assert_eq!(auth.login("adm1n"), Some(Role::Admin));
        assert_eq!(auth.login("v1ew"), Some(Role::Viewer));
        assert_eq!(auth.login("adm1"), None);
        let admin = auth.session_cookie(Role::Admin).expect("cookie");
        assert!(!admin.contains("adm1n"), "{admin}");
        for attr in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "switchboard_dashboard_8477=",
        ] {
            assert!(admin.contains(attr), "{admin} lacks {attr}");
        }
        assert_eq!(auth.role(&with_cookie(&admin)), Some(Role::Admin));
        let viewer = auth.session_cookie(Role::Viewer).expect("cookie");
        assert_eq!(auth.role(&with_cookie(&viewer)), Some(Role::Viewer));
        // A viewer cookie relabelled as admin is refused.
        let forged = viewer.replacen("=v.", "=a.", 1);
        assert_eq!(auth.role(&with_cookie(&forged)), None);
        // A new token logs every browser out.
        let rotated = Auth::new(Some(Secret::new("new")), None, 8477);
        assert_eq!(rotated.role(&with_cookie(&admin)), None);
        // Another dashboard's cookie (another port) is not ours.
        let other = Auth::new(Some(Secret::new("adm1n")), None, 9000);
        assert_eq!(other.role(&with_cookie(&admin)), None);
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer v1ew"),
        );
        assert_eq!(auth.role(&bearer), Some(Role::Viewer));
        assert!(!Auth::new(None, None, 1).configured());
    }
}
