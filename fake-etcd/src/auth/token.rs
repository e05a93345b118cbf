//! Auth tokens, as etcd's two providers make and check them.
//!
//! - **Simple** (etcd's default): `<16 random letters>.<raft index>`, kept
//!   in a table with a sliding TTL (`--auth-token-ttl`, 300 s), on the
//!   member's clock: each successful use restarts it, and a test expires
//!   one by advancing time.
//! - **JWT** (`--auth-token jwt,...`): signed claims `{username, revision,
//!   exp}`, checked by signature and expiry (against the member's clock, in
//!   Unix seconds) and never stored.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::AuthError;
use crate::rng::SplitMix64;

/// etcd's default TTL of simple tokens.
pub(crate) const DEFAULT_SIMPLE_TTL: Duration = Duration::from_secs(300);
/// etcd's default TTL of JWTs.
const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const SIMPLE_TOKEN_LENGTH: usize = 16;

/// How the member makes auth tokens (etcd's `--auth-token`).
#[derive(Clone)]
pub(crate) enum TokenConfig {
    Simple { ttl: Duration },
    Jwt(JwtKeys),
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Simple { ttl } => f.debug_struct("Simple").field("ttl", ttl).finish(),
            Self::Jwt(keys) => f
                .debug_struct("Jwt")
                .field("algorithm", &keys.algorithm)
                .field("ttl", &keys.ttl)
                .finish_non_exhaustive(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self::Simple {
            ttl: DEFAULT_SIMPLE_TTL,
        }
    }
}

/// A JWT provider's keys.
#[derive(Clone)]
pub(crate) struct JwtKeys {
    algorithm: Algorithm,
    /// None for a verify-only provider (a public key alone).
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

impl TokenConfig {
    /// Parses etcd's `--auth-token` value: `simple`, or
    /// `jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG[,ttl=DURATION]`.
    /// `simple_ttl` is `--auth-token-ttl`.
    pub(crate) fn parse(spec: &str, simple_ttl: Duration) -> Result<Self, String> {
        let mut parts = spec.split(',');
        let kind = parts.next().unwrap_or_default();
        let mut options = HashMap::new();
        for part in parts {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("--auth-token: {part:?} is not NAME=VALUE"))?;
            if options.insert(name, value).is_some() {
                return Err(format!("--auth-token: {name} given twice"));
            }
        }
        match kind {
            "simple" => Ok(Self::Simple { ttl: simple_ttl }),
            "jwt" => JwtKeys::from_options(&options).map(Self::Jwt),
            other => Err(format!(
                "--auth-token: unknown token type {other:?} (simple or jwt)"
            )),
        }
    }
}

impl JwtKeys {
    fn from_options(options: &HashMap<&str, &str>) -> Result<Self, String> {
        const KNOWN: [&str; 4] = ["pub-key", "priv-key", "sign-method", "ttl"];
        if let Some(unknown) = options.keys().find(|k| !KNOWN.contains(k)) {
            return Err(format!(
                "--auth-token: unknown jwt option {unknown:?} (one of {})",
                KNOWN.join(", ")
            ));
        }
        let read = |name: &str| -> Result<Option<Vec<u8>>, String> {
            options
                .get(name)
                .filter(|file| !file.is_empty())
                .map(|file| {
                    std::fs::read(file).map_err(|err| format!("--auth-token {name}={file}: {err}"))
                })
                .transpose()
        };
        let private = read("priv-key")?;
        let public = read("pub-key")?;
        let ttl = match options.get("ttl") {
            Some(ttl) => crate::duration::parse_duration(ttl)
                .ok_or_else(|| format!("--auth-token: ttl={ttl} is not a duration such as 5m"))?,
            None => DEFAULT_JWT_TTL,
        };
        let method = options.get("sign-method").copied().unwrap_or_default();
        let algorithm: Algorithm = method.parse().map_err(|_| {
            format!("--auth-token: sign-method={method:?} is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, HS256, HS384, HS512")
        })?;
        Self::new(algorithm, private.as_deref(), public.as_deref(), ttl)
    }

    /// Keys for `algorithm` from PEM files (RSA and ECDSA: the public key
    /// verifies, the private one signs) or a secret (HMAC: the private key
    /// file's bytes, as etcd reads it).
    pub(crate) fn new(
        algorithm: Algorithm,
        private: Option<&[u8]>,
        public: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<Self, String> {
        let bad =
            |what: &str, err: jsonwebtoken::errors::Error| format!("--auth-token: {what}: {err}");
        let (signing, verifying) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = private.ok_or("--auth-token: HMAC needs priv-key (the secret)")?;
                (
                    Some(EncodingKey::from_secret(secret)),
                    DecodingKey::from_secret(secret),
                )
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let public = public.ok_or("--auth-token: ECDSA needs pub-key")?;
                let signing = private
                    .map(|pem| EncodingKey::from_ec_pem(pem).map_err(|e| bad("priv-key", e)))
                    .transpose()?;
                (
                    signing,
                    DecodingKey::from_ec_pem(public).map_err(|e| bad("pub-key", e))?,
                )
            }
            Algorithm::EdDSA => {
                return Err("--auth-token: EdDSA is not a method etcd signs with".into())
            }
            _ => {
                let public = public.ok_or("--auth-token: RSA needs pub-key")?;
                let signing = private
                    .map(|pem| EncodingKey::from_rsa_pem(pem).map_err(|e| bad("priv-key", e)))
                    .transpose()?;
                (
                    signing,
                    DecodingKey::from_rsa_pem(public).map_err(|e| bad("pub-key", e))?,
                )
            }
        };
        Ok(Self {
            algorithm,
            signing,
            verifying,
            ttl,
        })
    }
}

/// A JWT's claims, as etcd writes them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    username: String,
    revision: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<f64>,
}

/// A live simple token.
#[derive(Debug, Clone)]
pub(crate) struct SimpleToken {
    pub(crate) user: String,
    pub(crate) deadline: Duration,
}

/// The member's token provider, with its live simple tokens.
#[derive(Debug)]
pub(crate) struct Tokens {
    config: TokenConfig,
    simple: HashMap<String, SimpleToken>,
    rng: SplitMix64,
}

impl Tokens {
    pub(crate) fn new(config: TokenConfig, seed: u64) -> Self {
        Self {
            config,
            simple: HashMap::new(),
            rng: SplitMix64(seed),
        }
    }

    /// A fresh token for `user`, made by the Authenticate entry at raft
    /// `index`, at auth `revision`; `now` on the member's clock, `unix_now`
    /// the same instant in Unix time.
    pub(crate) fn assign(
        &mut self,
        user: &str,
        revision: u64,
        index: u64,
        now: Duration,
        unix_now: Duration,
    ) -> Result<String, AuthError> {
        match &self.config {
            TokenConfig::Simple { ttl } => {
                let prefix: String = (0..SIMPLE_TOKEN_LENGTH)
                    .map(|_| LETTERS[self.rng.below(LETTERS.len() as u64) as usize] as char)
                    .collect();
                let token = format!("{prefix}.{index}");
                // etcd sweeps expired tokens every second; here, at each
                // login, so unused ones do not pile up.
                self.simple.retain(|_, t| t.deadline > now);
                self.simple.insert(
                    token.clone(),
                    SimpleToken {
                        user: user.to_owned(),
                        deadline: now + *ttl,
                    },
                );
                Ok(token)
            }
            TokenConfig::Jwt(keys) => {
                let signing = keys.signing.as_ref().ok_or(AuthError::VerifyOnly)?;
                let claims = Claims {
                    username: user.to_owned(),
                    revision: revision as f64,
                    exp: Some((unix_now + keys.ttl).as_secs() as f64),
                };
                jsonwebtoken::encode(&Header::new(keys.algorithm), &claims, signing)
                    .map_err(|_| AuthError::InvalidAuthToken)
            }
        }
    }

    /// Who a token speaks for, and at which auth revision (`None` for a
    /// simple token: it always speaks at the current one). A simple
    /// token's TTL restarts.
    pub(crate) fn info(
        &mut self,
        token: &str,
        now: Duration,
        unix_now: Duration,
    ) -> Option<(String, Option<u64>)> {
        match &self.config {
            TokenConfig::Simple { ttl } => {
                let entry = self.simple.get_mut(token)?;
                if entry.deadline <= now {
                    self.simple.remove(token);
                    return None;
                }
                entry.deadline = now + *ttl;
                Some((entry.user.clone(), None))
            }
            TokenConfig::Jwt(keys) => {
                let mut validation = Validation::new(keys.algorithm);
                // Expiry is checked below, on the member's clock.
                validation.validate_exp = false;
                validation.required_spec_claims.clear();
                let claims = jsonwebtoken::decode::<Claims>(token, &keys.verifying, &validation)
                    .ok()?
                    .claims;
                if claims
                    .exp
                    .is_some_and(|exp| exp < unix_now.as_secs_f64().floor())
                {
                    return None;
                }
                Some((claims.username, Some(claims.revision as u64)))
            }
        }
    }

    /// Drops every token of `user` (deleted, or given a new password).
    pub(crate) fn invalidate_user(&mut self, user: &str) {
        self.simple.retain(|_, token| token.user != user);
    }

    /// Drops every token (auth disabled).
    pub(crate) fn invalidate_all(&mut self) {
        self.simple.clear();
    }

    /// The live simple tokens, for a test to look at.
    pub(crate) fn simple_tokens(
        &self,
        now: Duration,
    ) -> impl Iterator<Item = (&String, &SimpleToken)> {
        self.simple.iter().filter(move |(_, t)| t.deadline > now)
    }

    /// Expires tokens now: those of `user`, or all. Returns how many.
    pub(crate) fn expire(&mut self, user: Option<&str>) -> usize {
        let before = self.simple.len();
        self.simple.retain(|_, t| user.is_some_and(|u| t.user != u));
        before - self.simple.len()
    }
}
