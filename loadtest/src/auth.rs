//! Mints HS256 tokens locally with the deployment's shared secret (SPEC §3):
//! issuer `applause`, `exp`, `sub`, `role`, `name`.

use anyhow::{Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How long minted tokens stay valid: longer than any sensible run.
const TOKEN_TTL_SECS: u64 = 6 * 3600;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    role: &'a str,
    name: &'a str,
    exp: u64,
}

/// Mints tokens for the users the load generator plays.
#[derive(Clone)]
pub struct TokenMint {
    key: EncodingKey,
}

impl std::fmt::Debug for TokenMint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMint { .. }")
    }
}

impl TokenMint {
    pub fn new(secret: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for `sub` acting as `role` (viewer, broadcaster, finance, admin).
    pub fn mint(&self, sub: &str, role: &str, name: &str) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("system clock before 1970")?
            .as_secs();
        let claims = Claims {
            iss: "applause",
            sub,
            role,
            name,
            exp: now + TOKEN_TTL_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .context("signing a JWT")
    }
}
