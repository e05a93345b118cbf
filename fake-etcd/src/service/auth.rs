//! `etcdserverpb.Auth`: users, roles, permissions, and logging in.
//!
//! Each RPC is one raft entry through the pipeline ([`serve`]), with the
//! admin gate of [`authorize`](super::authorize) before the store's own
//! checks. Passwords are hashed and compared with bcrypt outside the
//! member's lock, on a blocking thread, as etcd hashes them in its API
//! layer before proposing: a slow hash never holds up other clients.

use std::sync::Arc;

use base64::Engine;
use etcd_proto::etcdserverpb::{
    auth_server::Auth, AuthDisableRequest, AuthDisableResponse, AuthEnableRequest,
    AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest,
    AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListRequest,
    AuthRoleListResponse, AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse,
    AuthStatusRequest, AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest,
    AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse,
    AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateRequest,
    AuthenticateResponse,
};
use tonic::{Request, Response, Status};

use super::serve;
use crate::auth::AuthError;
use crate::error::EtcdError;
use crate::member::{Applied, Member};

/// bcrypt takes at most 72 bytes of password; Go's refuses longer ones.
const BCRYPT_MAX_PASSWORD: usize = 72;

/// The Auth service of one member.
#[derive(Debug, Clone)]
pub(crate) struct AuthService {
    member: Arc<Member>,
}

impl AuthService {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        Self { member }
    }

    /// bcrypt at the member's cost, off the async threads; the hash as Go
    /// writes it (`$2a$`).
    async fn hash(&self, password: String) -> Result<Vec<u8>, Status> {
        if password.len() > BCRYPT_MAX_PASSWORD {
            return Err(EtcdError::PasswordTooLong.into());
        }
        let cost = self.member.lock().auth.bcrypt_cost;
        tokio::task::spawn_blocking(move || {
            bcrypt::hash_with_result(password, cost)
                .map(|hash| hash.format_for_version(bcrypt::Version::TwoA).into_bytes())
        })
        .await
        .map_err(|err| EtcdError::Bcrypt(err.to_string()))?
        .map_err(|err| EtcdError::Bcrypt(err.to_string()).into())
    }
}

/// Whether `password` matches a bcrypt `hash` (an empty or broken hash
/// matches nothing).
async fn password_matches(password: String, hash: Vec<u8>) -> bool {
    tokio::task::spawn_blocking(move || {
        std::str::from_utf8(&hash)
            .ok()
            .and_then(|hash| bcrypt::verify(password, hash).ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Runs an Auth RPC whose effect is one call on the auth store.
macro_rules! auth_rpc {
    ($self:ident, $request:ident, |$auth:ident, $req:ident| $effect:expr) => {
        serve(&$self.member, $request, |core, $req, _| {
            let $auth = &mut core.auth;
            let response = $effect.map_err(EtcdError::from)?;
            Ok(Applied::response(response))
        })
        .await
    };
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        auth_rpc!(self, request, |auth, _req| auth
            .auth_enable()
            .map(|()| AuthEnableResponse::default()))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        auth_rpc!(self, request, |auth, _req| {
            auth.auth_disable();
            Ok::<_, AuthError>(AuthDisableResponse::default())
        })
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        auth_rpc!(self, request, |auth, _req| Ok::<_, AuthError>(
            AuthStatusResponse {
                header: None,
                enabled: auth.enabled(),
                auth_revision: auth.revision(),
            }
        ))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        // A token the request carries is not looked at: logging in needs
        // none, and a stale one must not stop it.
        let AuthenticateRequest { name, password } = request.into_inner();
        loop {
            let (hash, checked_at) = self
                .member
                .lock()
                .auth
                .password_of(&name)
                .map_err(EtcdError::from)?;
            if !password_matches(password.clone(), hash).await {
                return Err(EtcdError::from(AuthError::AuthFailed).into());
            }
            let request = Request::new(AuthenticateRequest {
                name: name.clone(),
                password: String::new(),
            });
            // As etcd, the token is made by a raft entry; if the auth store
            // changed since the password was checked, check it again.
            let outcome = serve(&self.member, request, |core, req, now| {
                let index = core.raft_index;
                let token = core.auth.authenticate(&req.name, index, now)?;
                let stale = core.auth.revision() != checked_at;
                Ok(Applied::response(Authenticated {
                    response: AuthenticateResponse {
                        header: None,
                        token,
                    },
                    stale,
                }))
            })
            .await?;
            let Authenticated { response, stale } = outcome.into_inner();
            if !stale {
                return Ok(Response::new(response));
            }
        }
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let no_password = request
            .get_ref()
            .options
            .as_ref()
            .is_some_and(|o| o.no_password);
        // etcd hashes the password, even an empty one, before it checks
        // anything else.
        let hash = if no_password {
            Vec::new()
        } else {
            self.hash(request.get_ref().password.clone()).await?
        };
        auth_rpc!(self, request, |auth, req| auth
            .user_add(&req.name, hash, no_password)
            .map(|()| AuthUserAddResponse::default()))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth.user_get(&req.name).map(
            |roles| AuthUserGetResponse {
                header: None,
                roles,
            }
        ))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        auth_rpc!(self, request, |auth, _req| Ok::<_, AuthError>(
            AuthUserListResponse {
                header: None,
                users: auth.user_list(),
            }
        ))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .user_delete(&req.name)
            .map(|()| AuthUserDeleteResponse::default()))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        // A new password is hashed; without one, the client's own hash
        // (base64) is taken, and none at all leaves a user who cannot log
        // in with a password.
        let req = request.get_ref();
        let hash = if req.password.is_empty() {
            base64::engine::general_purpose::STANDARD
                .decode(&req.hashed_password)
                .map_err(|_| EtcdError::Auth(AuthError::NoPasswordUser))?
        } else {
            self.hash(req.password.clone()).await?
        };
        auth_rpc!(self, request, |auth, req| auth
            .user_change_password(&req.name, hash)
            .map(|()| AuthUserChangePasswordResponse::default()))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .user_grant_role(&req.user, &req.role)
            .map(|()| AuthUserGrantRoleResponse::default()))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .user_revoke_role(&req.name, &req.role)
            .map(|()| AuthUserRevokeRoleResponse::default()))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .role_add(&req.name)
            .map(|()| AuthRoleAddResponse::default()))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .role_get(&req.role)
            .map(|perm| AuthRoleGetResponse { header: None, perm }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        auth_rpc!(self, request, |auth, _req| Ok::<_, AuthError>(
            AuthRoleListResponse {
                header: None,
                roles: auth.role_list(),
            }
        ))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .role_delete(&req.role)
            .map(|()| AuthRoleDeleteResponse::default()))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .role_grant_permission(&req.name, req.perm.clone())
            .map(|()| AuthRoleGrantPermissionResponse::default()))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        auth_rpc!(self, request, |auth, req| auth
            .role_revoke_permission(&req.role, &req.key, &req.range_end)
            .map(|()| AuthRoleRevokePermissionResponse::default()))
    }
}

/// An Authenticate entry's outcome: its response, and whether the auth
/// store changed since the password was checked.
struct Authenticated {
    response: AuthenticateResponse,
    stale: bool,
}

impl crate::header::HasHeader for Authenticated {
    fn header_mut(&mut self) -> &mut Option<etcd_proto::etcdserverpb::ResponseHeader> {
        &mut self.response.header
    }
}
