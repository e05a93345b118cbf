//! etcd's auth store: users, roles, key permissions, the auth revision and
//! tokens, as `server/auth/store.go` keeps them.
//!
//! [`AuthStore`] is pure state inside the [`Core`](crate::core::Core),
//! like the KV store: each User*/Role*/Auth* RPC is one method with etcd's
//! checks in etcd's order. Who a caller is ([`AuthStore::identify`]) and what
//! it may do ([`AuthStore::check`], [`AuthStore::check_admin`]) are asked
//! by the request pipeline (`service::authorize`), which knows what each RPC
//! needs. Password hashing (bcrypt, slow on purpose) happens outside the
//! member's lock, in the Auth service, as etcd does it in its API layer
//! before the request goes through raft.

pub(crate) mod handle;
pub(crate) mod permissions;
pub(crate) mod token;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use etcd_proto::authpb::Permission;
use tonic::Code;

use permissions::{MergedPermissions, Need};
use token::{TokenConfig, Tokens};

/// The user and the role that may do anything.
pub(crate) const ROOT: &str = "root";

/// etcd's default bcrypt cost (`--bcrypt-cost`).
pub(crate) const DEFAULT_BCRYPT_COST: u32 = 10;

/// An error of etcd's auth package, with its own text (`auth: ...`). Most
/// reach clients mapped to an `etcdserver: ...` status
/// ([`AuthError::mapped`]); some RPCs send the raw text as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("auth: root user does not exist")]
    RootUserNotExist,
    #[error("auth: root user does not have root role")]
    RootRoleNotExist,
    #[error("auth: user already exists")]
    UserAlreadyExist,
    #[error("auth: user name is empty")]
    UserEmpty,
    #[error("auth: user not found")]
    UserNotFound,
    #[error("auth: role already exists")]
    RoleAlreadyExist,
    #[error("auth: role not found")]
    RoleNotFound,
    #[error("auth: role name is empty")]
    RoleEmpty,
    #[error("auth: permission not given")]
    PermissionNotGiven,
    #[error("auth: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("auth: permission denied")]
    PermissionDenied,
    #[error("auth: role is not granted to the user")]
    RoleNotGranted,
    #[error("auth: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("auth: authentication is not enabled")]
    AuthNotEnabled,
    #[error("auth: revision in header is old")]
    AuthOldRevision,
    #[error("auth: invalid auth token")]
    InvalidAuthToken,
    #[error("auth: invalid auth management")]
    InvalidAuthMgmt,
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
}

impl AuthError {
    /// The status etcd's `togRPCError` turns this error into, or `None`
    /// if it is not in its table (sent as `Unknown` with the raw text).
    pub(crate) fn mapped(self) -> Option<(Code, &'static str)> {
        use Code::{FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated};
        Some(match self {
            Self::RootUserNotExist => (FailedPrecondition, "etcdserver: root user does not exist"),
            Self::RootRoleNotExist => (
                FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            Self::UserAlreadyExist => (FailedPrecondition, "etcdserver: user name already exists"),
            Self::UserEmpty => (InvalidArgument, "etcdserver: user name is empty"),
            Self::UserNotFound => (FailedPrecondition, "etcdserver: user name not found"),
            Self::RoleAlreadyExist => (FailedPrecondition, "etcdserver: role name already exists"),
            Self::RoleNotFound => (FailedPrecondition, "etcdserver: role name not found"),
            Self::RoleEmpty => (InvalidArgument, "etcdserver: role name is empty"),
            Self::PermissionNotGiven => (InvalidArgument, "etcdserver: permission not given"),
            Self::AuthFailed => (
                InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            Self::PermissionDenied => (PermissionDenied, "etcdserver: permission denied"),
            Self::RoleNotGranted => (
                FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            Self::PermissionNotGranted => (
                FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            Self::AuthNotEnabled => (
                FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            Self::AuthOldRevision => (InvalidArgument, "etcdserver: revision of auth store is old"),
            Self::InvalidAuthToken => (Unauthenticated, "etcdserver: invalid auth token"),
            Self::InvalidAuthMgmt => (InvalidArgument, "etcdserver: invalid auth management"),
            Self::NoPasswordUser | Self::VerifyOnly => return None,
        })
    }
}

/// A user, as etcd stores one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct User {
    /// The bcrypt hash; empty when the user cannot log in with a password.
    pub(crate) password: Vec<u8>,
    /// Sorted role names.
    pub(crate) roles: Vec<String>,
    pub(crate) no_password: bool,
}

/// A role: its key permissions, sorted by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Role {
    pub(crate) permissions: Vec<Permission>,
}

/// Who a request speaks for, once its credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthInfo {
    pub(crate) user: String,
    /// The auth revision the credentials were issued at (a JWT's claim),
    /// or the current one (a simple token, a certificate's CN).
    pub(crate) revision: u64,
}

/// What a request presented: a token (`token` or `authorization`
/// metadata), and a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) token: Option<String>,
    pub(crate) client: ClientName,
}

/// Who a request's client certificate says the caller is. The certificate
/// is parsed only when that matters (auth enabled and no token), not on
/// every request of a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ClientName {
    /// No certificate (or one etcd ignores).
    #[default]
    None,
    /// A name the member's own client passes on for its caller.
    Known(String),
    /// The verified peer chain, leaf first.
    #[cfg(feature = "tls")]
    Certificate(std::sync::Arc<Vec<tonic::transport::CertificateDer<'static>>>),
}

impl ClientName {
    /// The common name: the user, when auth is on and no token is sent.
    pub(crate) fn common_name(&self) -> Option<String> {
        match self {
            Self::None => None,
            Self::Known(name) => Some(name.clone()),
            #[cfg(feature = "tls")]
            Self::Certificate(chain) => crate::tls::common_name(chain.first()?),
        }
    }
}

/// How a member's auth is set up: etcd's `--auth-token`,
/// `--auth-token-ttl` and `--bcrypt-cost`.
#[derive(Debug, Clone)]
pub(crate) struct AuthConfig {
    pub(crate) tokens: TokenConfig,
    pub(crate) bcrypt_cost: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: TokenConfig::default(),
            bcrypt_cost: DEFAULT_BCRYPT_COST,
        }
    }
}

/// The auth state of the cluster.
#[derive(Debug)]
pub(crate) struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's permissions, merged from its roles: what every request
    /// is checked against, so worked out once per change to users or
    /// roles (as etcd's range permission cache is), not once per check.
    merged: HashMap<String, MergedPermissions>,
    pub(crate) tokens: Tokens,
    pub(crate) bcrypt_cost: u32,
    /// The Unix time at which the member's clock read zero: JWTs carry
    /// Unix expiry times.
    unix_epoch_offset: Duration,
}

impl AuthStore {
    pub(crate) fn new(config: AuthConfig, seed: u64, unix_epoch_offset: Duration) -> Self {
        Self {
            enabled: false,
            // etcd's auth revision starts at 1.
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            merged: HashMap::new(),
            tokens: Tokens::new(config.tokens, seed),
            bcrypt_cost: config.bcrypt_cost,
            unix_epoch_offset,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// Records a change to users or roles.
    fn bump(&mut self) {
        self.revision += 1;
        self.merge_permissions();
    }

    fn merge_permissions(&mut self) {
        let roles = &self.roles;
        self.merged = self
            .users
            .iter()
            .map(|(name, user)| {
                let granted = user
                    .roles
                    .iter()
                    .filter_map(|role| roles.get(role))
                    .flat_map(|role| &role.permissions);
                (name.clone(), MergedPermissions::merge(granted))
            })
            .collect();
    }

    pub(crate) fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    pub(crate) fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    /// Puts back a state read from a snapshot.
    pub(crate) fn restore(
        &mut self,
        enabled: bool,
        revision: u64,
        users: BTreeMap<String, User>,
        roles: BTreeMap<String, Role>,
    ) {
        self.enabled = enabled;
        self.revision = revision;
        self.users = users;
        self.roles = roles;
        self.merge_permissions();
    }

    /// Who the credentials speak for: `None` with auth disabled (any token
    /// is then ignored, as the 3.5 tip does) or with no credentials. A
    /// token wins over a certificate's CN.
    pub(crate) fn identify(
        &mut self,
        credentials: &Credentials,
        now: Duration,
    ) -> Result<Option<AuthInfo>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        if let Some(token) = &credentials.token {
            let unix_now = self.unix_epoch_offset + now;
            let (user, revision) = self
                .tokens
                .info(token, now, unix_now)
                .ok_or(AuthError::InvalidAuthToken)?;
            return Ok(Some(AuthInfo {
                user,
                revision: revision.unwrap_or(self.revision),
            }));
        }
        Ok(credentials.client.common_name().map(|user| AuthInfo {
            user,
            revision: self.revision,
        }))
    }

    /// etcd's `IsAdminPermitted`: with auth enabled, only a user holding
    /// the root role.
    pub(crate) fn check_admin(&self, info: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let info = info
            .filter(|i| !i.user.is_empty())
            .ok_or(AuthError::UserEmpty)?;
        let user = self.users.get(&info.user).ok_or(AuthError::UserNotFound)?;
        if has_root_role(user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether the caller is an admin (no error to report).
    pub(crate) fn is_admin(&self, info: Option<&AuthInfo>) -> bool {
        self.check_admin(info).is_ok()
    }

    /// etcd's `requireAuthInfo`: with auth enabled, any identified caller.
    pub(crate) fn check_identified(&self, info: Option<&AuthInfo>) -> Result<(), AuthError> {
        if self.enabled && info.is_none() {
            return Err(AuthError::UserEmpty);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: `need` on one key (`range_end` empty) or on
    /// a range, for the caller.
    pub(crate) fn check(
        &self,
        info: Option<&AuthInfo>,
        need: Need,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let info = info.ok_or(AuthError::UserEmpty)?;
        if info.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let user = self
            .users
            .get(&info.user)
            .ok_or(AuthError::PermissionDenied)?;
        if has_root_role(user) {
            return Ok(());
        }
        let allowed = self
            .merged
            .get(&info.user)
            .is_some_and(|merged| merged.allows(need, key, range_end));
        if allowed {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` holds `role` (RoleGet is allowed to holders).
    pub(crate) fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    pub(crate) fn auth_enable(&mut self) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(AuthError::RootRoleNotExist);
        }
        self.enabled = true;
        Ok(())
    }

    pub(crate) fn auth_disable(&mut self) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        self.bump();
        self.tokens.invalidate_all();
    }

    /// The first half of Authenticate, before the password is compared
    /// (outside the lock): the user's hash and the revision it was read
    /// at.
    pub(crate) fn password_of(&self, name: &str) -> Result<(Vec<u8>, u64), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.no_password {
            return Err(AuthError::NoPasswordUser);
        }
        Ok((user.password.clone(), self.revision))
    }

    /// The Authenticate entry: a token for `name`, made at raft `index`.
    pub(crate) fn authenticate(
        &mut self,
        name: &str,
        index: u64,
        now: Duration,
    ) -> Result<String, AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        match self.users.get(name) {
            Some(user) if !user.no_password => {}
            _ => return Err(AuthError::AuthFailed),
        }
        let unix_now = self.unix_epoch_offset + now;
        self.tokens
            .assign(name, self.revision, index, now, unix_now)
    }

    /// UserAdd, given the password already hashed (or none for a
    /// `no_password` user).
    pub(crate) fn user_add(
        &mut self,
        name: &str,
        password: Vec<u8>,
        no_password: bool,
    ) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(AuthError::UserAlreadyExist);
        }
        self.users.insert(
            name.to_owned(),
            User {
                password: if no_password { Vec::new() } else { password },
                roles: Vec::new(),
                no_password,
            },
        );
        self.bump();
        Ok(())
    }

    pub(crate) fn user_get(&self, name: &str) -> Result<Vec<String>, AuthError> {
        self.users
            .get(name)
            .map(|u| u.roles.clone())
            .ok_or(AuthError::UserNotFound)
    }

    pub(crate) fn user_list(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub(crate) fn user_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(AuthError::UserNotFound)?;
        self.bump();
        self.tokens.invalidate_user(name);
        Ok(())
    }

    /// UserChangePassword, given the new hash (empty: the user can no
    /// longer log in with a password).
    pub(crate) fn user_change_password(
        &mut self,
        name: &str,
        password: Vec<u8>,
    ) -> Result<(), AuthError> {
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        if !user.no_password {
            user.password = password;
        }
        self.bump();
        self.tokens.invalidate_user(name);
        Ok(())
    }

    pub(crate) fn user_grant_role(&mut self, name: &str, role: &str) -> Result<(), AuthError> {
        if !self.users.contains_key(name) {
            return Err(AuthError::UserNotFound);
        }
        // The root role needs no role object.
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        match user.roles.binary_search_by(|r| r.as_str().cmp(role)) {
            Ok(_) => Ok(()),
            Err(at) => {
                user.roles.insert(at, role.to_owned());
                self.bump();
                Ok(())
            }
        }
    }

    pub(crate) fn user_revoke_role(&mut self, name: &str, role: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT && role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|r| r != role);
        if user.roles.len() == before {
            return Err(AuthError::RoleNotGranted);
        }
        self.bump();
        Ok(())
    }

    pub(crate) fn role_add(&mut self, name: &str) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.roles.insert(name.to_owned(), Role::default());
        self.bump();
        Ok(())
    }

    pub(crate) fn role_get(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        self.roles
            .get(name)
            .map(|r| r.permissions.clone())
            .ok_or(AuthError::RoleNotFound)
    }

    pub(crate) fn role_list(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    pub(crate) fn role_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.retain(|r| r != name);
        }
        self.bump();
        Ok(())
    }

    /// RoleGrantPermission: a new (key, range_end) is added in key order;
    /// the same one again only changes its type. As the 3.5 tip does, an
    /// empty key, or a range end at or before the key (other than `"\0"`),
    /// is refused.
    pub(crate) fn role_grant_permission(
        &mut self,
        name: &str,
        permission: Option<Permission>,
    ) -> Result<(), AuthError> {
        let permission = permission.ok_or(AuthError::PermissionNotGiven)?;
        if !valid_permission_range(&permission.key, &permission.range_end) {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
        let at = role
            .permissions
            .partition_point(|p| p.key.as_ref() < permission.key.as_ref());
        match role.permissions.get_mut(at) {
            Some(existing)
                if existing.key == permission.key && existing.range_end == permission.range_end =>
            {
                existing.perm_type = permission.perm_type;
            }
            _ => {
                role.permissions.push(permission);
                role.permissions.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        self.bump();
        Ok(())
    }

    pub(crate) fn role_revoke_permission(
        &mut self,
        name: &str,
        key: &Bytes,
        range_end: &Bytes,
    ) -> Result<(), AuthError> {
        let role = self.roles.get_mut(name).ok_or(AuthError::RoleNotFound)?;
        let before = role.permissions.len();
        role.permissions
            .retain(|p| !(p.key == *key && p.range_end == *range_end));
        if role.permissions.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.bump();
        Ok(())
    }
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT)
}

/// etcd's `isValidPermissionRange` (3.5 tip): a key, and a range end that
/// is empty, `"\0"`, or after the key.
fn valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || range_end > key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_proto::authpb::permission::Type as PermType;

    fn store() -> AuthStore {
        AuthStore::new(AuthConfig::default(), 7, Duration::from_secs(1_700_000_000))
    }

    fn with_root() -> AuthStore {
        let mut auth = store();
        auth.user_add(ROOT, b"hash".to_vec(), false).unwrap();
        auth.user_grant_role(ROOT, ROOT).unwrap();
        auth
    }

    #[test]
    fn the_revision_moves_on_successful_changes_only() {
        let mut auth = store();
        assert_eq!(auth.revision(), 1);
        assert_eq!(auth.auth_enable(), Err(AuthError::RootUserNotExist));
        auth.user_add(ROOT, Vec::new(), false).unwrap();
        assert_eq!(auth.auth_enable(), Err(AuthError::RootRoleNotExist));
        auth.user_grant_role(ROOT, ROOT).unwrap();
        assert_eq!(auth.revision(), 3);
        // A duplicate grant changes nothing.
        auth.user_grant_role(ROOT, ROOT).unwrap();
        assert_eq!(auth.revision(), 3);
        assert_eq!(
            auth.user_add(ROOT, Vec::new(), false),
            Err(AuthError::UserAlreadyExist)
        );
        auth.auth_enable().unwrap();
        assert_eq!(auth.revision(), 3, "enabling is not a change");
        auth.auth_disable();
        assert_eq!(auth.revision(), 4);
        auth.auth_disable();
        assert_eq!(auth.revision(), 4, "disabling twice changes nothing");
    }

    #[test]
    fn root_rules_hold_only_while_auth_is_enabled() {
        let mut auth = with_root();
        auth.auth_enable().unwrap();
        assert_eq!(auth.user_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(
            auth.user_revoke_role(ROOT, ROOT),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(auth.role_delete(ROOT), Err(AuthError::InvalidAuthMgmt));
        auth.auth_disable();
        auth.user_revoke_role(ROOT, ROOT).unwrap();
        auth.user_delete(ROOT).unwrap();
    }

    #[test]
    fn permissions_are_checked_for_identified_users_at_the_current_revision() {
        let mut auth = with_root();
        auth.user_add("app", Vec::new(), false).unwrap();
        auth.role_add("app-rw").unwrap();
        auth.role_grant_permission(
            "app-rw",
            Some(Permission {
                perm_type: PermType::Readwrite as i32,
                key: Bytes::from_static(b"app/"),
                range_end: Bytes::from_static(b"app0"),
            }),
        )
        .unwrap();
        auth.user_grant_role("app", "app-rw").unwrap();
        auth.auth_enable().unwrap();
        let app = AuthInfo {
            user: "app".into(),
            revision: auth.revision(),
        };
        assert_eq!(auth.check(Some(&app), Need::Write, b"app/x", b""), Ok(()));
        assert_eq!(
            auth.check(Some(&app), Need::Write, b"other", b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            auth.check(None, Need::Read, b"app/x", b""),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(
            auth.check_admin(Some(&app)),
            Err(AuthError::PermissionDenied)
        );
        let stale = AuthInfo {
            revision: auth.revision() - 1,
            ..app
        };
        assert_eq!(
            auth.check(Some(&stale), Need::Read, b"app/x", b""),
            Err(AuthError::AuthOldRevision)
        );
    }

    #[test]
    fn granting_replaces_the_type_of_the_same_range_and_keeps_key_order() {
        let mut auth = store();
        auth.role_add("r").unwrap();
        let perm = |t: PermType, key: &'static [u8], end: &'static [u8]| Permission {
            perm_type: t as i32,
            key: Bytes::from_static(key),
            range_end: Bytes::from_static(end),
        };
        auth.role_grant_permission("r", Some(perm(PermType::Read, b"b", b"")))
            .unwrap();
        auth.role_grant_permission("r", Some(perm(PermType::Read, b"a", b"\0")))
            .unwrap();
        auth.role_grant_permission("r", Some(perm(PermType::Write, b"b", b"")))
            .unwrap();
        let perms = auth.role_get("r").unwrap();
        assert_eq!(perms.len(), 2);
        assert_eq!(perms[0].key.as_ref(), b"a");
        assert_eq!(perms[1].perm_type, PermType::Write as i32);
        assert_eq!(
            auth.role_grant_permission("r", Some(perm(PermType::Read, b"", b""))),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            auth.role_grant_permission("r", Some(perm(PermType::Read, b"b", b"a"))),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            auth.role_revoke_permission("r", &Bytes::from_static(b"b"), &Bytes::from_static(b"c")),
            Err(AuthError::PermissionNotGranted)
        );
    }
}
