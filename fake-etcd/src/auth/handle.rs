//! The test's view of auth on the [`FakeEtcd`] handle: users, roles,
//! permissions, the auth revision and live tokens, and expiring tokens on
//! demand.

use std::time::Duration;

use etcd_proto::authpb::permission::Type as PermType;

use crate::FakeEtcd;

/// The auth store as [`FakeEtcd::auth`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthState {
    /// Whether auth is enabled.
    pub enabled: bool,
    /// The auth revision (`AuthStatus`'s `authRevision`): 1 at start, +1
    /// on each change to users, roles or permissions, and on disabling.
    pub revision: u64,
    /// Every user, by name.
    pub users: Vec<AuthUser>,
    /// Every role, by name.
    pub roles: Vec<AuthRole>,
    /// Live simple tokens, soonest expiry first (JWTs are never stored).
    pub tokens: Vec<AuthToken>,
}

/// A user (see [`AuthState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthUser {
    /// Its name.
    pub name: String,
    /// Its roles, sorted.
    pub roles: Vec<String>,
    /// Whether it was added with `no_password` (it logs in only by a
    /// client certificate).
    pub no_password: bool,
}

/// A role and its key permissions (see [`AuthState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthRole {
    /// Its name.
    pub name: String,
    /// Its permissions, in key order.
    pub permissions: Vec<KeyPermission>,
}

/// A role's permission on a key, a range `[key, range_end)`, or every key
/// from `key` on (`range_end` = `"\0"`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPermission {
    /// `READ`, `WRITE` or `READWRITE`.
    pub kind: String,
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range: empty for one key.
    pub range_end: Vec<u8>,
}

/// A live simple token (see [`AuthState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthToken {
    /// The token, as clients send it.
    pub token: String,
    /// The user it speaks for.
    pub user: String,
    /// Time left before it expires unused (each use restarts its TTL).
    pub expires_in: Duration,
}

impl FakeEtcd {
    /// The auth store now: users, roles, permissions, revision, tokens.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = fake_etcd::FakeEtcd::builder().bcrypt_cost(4).start().await?;
    /// let client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    /// client.auth_client().role_add("reader").await?;
    /// let auth = etcd.auth();
    /// assert_eq!(auth.revision, 2);
    /// assert_eq!(auth.roles[0].name, "reader");
    /// # Ok(())
    /// # }
    /// ```
    pub fn auth(&self) -> AuthState {
        let now = self.shared.clock.now();
        let core = self.shared.lock();
        let auth = &core.auth;
        let users = auth
            .users()
            .iter()
            .map(|(name, user)| AuthUser {
                name: name.clone(),
                roles: user.roles.clone(),
                no_password: user.no_password,
            })
            .collect();
        let roles = auth
            .roles()
            .iter()
            .map(|(name, role)| AuthRole {
                name: name.clone(),
                permissions: role
                    .permissions
                    .iter()
                    .map(|p| KeyPermission {
                        kind: PermType::try_from(p.perm_type).map_or_else(
                            |_| p.perm_type.to_string(),
                            |t| t.as_str_name().to_owned(),
                        ),
                        key: p.key.to_vec(),
                        range_end: p.range_end.to_vec(),
                    })
                    .collect(),
            })
            .collect();
        let mut tokens: Vec<AuthToken> = auth
            .tokens
            .simple_tokens(now)
            .map(|(token, live)| AuthToken {
                token: token.clone(),
                user: live.user.clone(),
                expires_in: live.deadline.saturating_sub(now),
            })
            .collect();
        tokens.sort_by(|a, b| (a.expires_in, &a.token).cmp(&(b.expires_in, &b.token)));
        AuthState {
            enabled: auth.enabled(),
            revision: auth.revision(),
            users,
            roles,
            tokens,
        }
    }

    /// Expires simple tokens now, as their TTL lapsing would: those of
    /// `user`, or every one with `None`. The next request with one fails
    /// with `Unauthenticated` "etcdserver: invalid auth token", and a
    /// client that logs in again gets a fresh one. Returns how many
    /// expired.
    pub fn expire_auth_tokens(&self, user: Option<&str>) -> usize {
        self.shared.lock().auth.tokens.expire(user)
    }
}
