//! JWT authentication exactly as SPEC §3: HS256 only (the algorithm is pinned,
//! `alg: none` and every other algorithm are refused), issuer `applause`, `exp`
//! required, `nbf` honoured when present, `sub` a valid user id, `role` one of
//! the four roles, at most [`TOKEN_BYTES_MAX`] bytes.

use std::time::Duration;

use applause_core::ids::{is_valid_user_id, Role};
use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::token_cache::{TokenCache, Verified};

/// The issuer every token must name.
pub const ISSUER: &str = "applause";
/// The shortest accepted secret, in bytes.
pub const SECRET_BYTES_MIN: usize = 32;
/// The longest display name kept from a token, in characters.
pub const NAME_CHARS_MAX: usize = 64;
/// The longest bearer token accepted, in bytes.
pub const TOKEN_BYTES_MAX: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    iss: String,
    exp: u64,
    /// Only read to decide whether a verified token may be cached (an
    /// integer or absent); jsonwebtoken checks it.
    #[serde(default, skip_serializing)]
    nbf: Option<serde_json::Value>,
}

/// Who is acting, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
    /// Display name: the token's `name`, or the user id when absent.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token has expired")]
    Expired,
}

/// The request's `Authorization` header, if it has one: the one place the
/// gift service and the gateway read it. A value that is not visible ASCII
/// cannot carry a token, so it is `Invalid` rather than absent.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map_err(|_| AuthError::Invalid))
        .transpose()
}

/// Verifies and mints tokens with one shared secret.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    verified: TokenCache,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    /// Builds an authenticator; the secret must be at least 32 bytes.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "JWT secret is {} bytes; at least {SECRET_BYTES_MIN} are required",
                secret.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        // A token that names a start time is not valid before it (with the
        // same leeway as `exp`); jsonwebtoken ignores `nbf` unless told.
        validation.validate_nbf = true;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: TokenCache::default(),
        })
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::Invalid);
        }
        if let Some(v) = self.verified.get(token) {
            let now = jsonwebtoken::get_current_timestamp();
            return match v.check_times(now, self.validation.leeway) {
                Ok(()) => Ok(v.principal),
                Err(e) => {
                    self.verified.remove(token);
                    Err(e)
                }
            };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let c = data.claims;
        if !is_valid_user_id(&c.sub) {
            return Err(AuthError::Invalid);
        }
        let role: Role = c.role.parse().map_err(|_| AuthError::Invalid)?;
        let name = match c.name {
            Some(n)
                if applause_core::ids::is_valid_text(&n, NAME_CHARS_MAX)
                    && !n.trim().is_empty() =>
            {
                n
            }
            Some(_) => return Err(AuthError::Invalid),
            None => c.sub.clone(),
        };
        let principal = Principal {
            user_id: c.sub,
            role,
            name,
        };
        let nbf = match &c.nbf {
            None => Some(None),
            Some(v) => v.as_u64().map(Some),
        };
        if let Some(nbf) = nbf {
            self.verified.insert(
                token,
                Verified {
                    principal: principal.clone(),
                    exp: c.exp,
                    nbf,
                },
            );
        }
        Ok(principal)
    }

    /// Verifies the value of an `Authorization` header (`Bearer <token>`).
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let value = header.ok_or(AuthError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Invalid)?;
        self.verify(token.trim())
    }

    /// Verifies the request's `Authorization: Bearer <token>` header.
    pub fn verify_request(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        self.verify_header(authorization(headers)?)
    }

    /// Mints a token (for `applause token`, the demo and tests).
    pub fn mint(
        &self,
        user_id: &str,
        role: Role,
        name: Option<&str>,
        ttl: Duration,
    ) -> Result<String, String> {
        if !is_valid_user_id(user_id) {
            return Err(format!(
                "user id {user_id:?} must be 1–64 characters of A-Z, a-z, 0-9, _ and -"
            ));
        }
        if let Some(n) = name {
            if n.trim().is_empty() || !applause_core::ids::is_valid_text(n, NAME_CHARS_MAX) {
                return Err(format!(
                    "name {n:?} must be 1–{NAME_CHARS_MAX} characters without control characters"
                ));
            }
        }
        let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl.as_secs();
        let claims = Claims {
            sub: user_id.to_owned(),
            role: role.as_str().to_owned(),
            name: name.map(str::to_owned),
            iss: ISSUER.to_owned(),
            exp,
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| format!("cannot sign token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> Authenticator {
        Authenticator::new(SECRET).unwrap()
    }

    fn raw(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
        use base64_like::encode;
        let h = encode(header.to_string().as_bytes());
        let c = encode(claims.to_string().as_bytes());
        let signing_input = format!("{h}.{c}");
        let key = EncodingKey::from_secret(secret);
        let sig =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{signing_input}.{sig}")
    }

    mod base64_like {
        // URL-safe base64 without padding, enough to forge test tokens.
        pub fn encode(input: &[u8]) -> String {
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }

    fn future() -> u64 {
        chrono::Utc::now().timestamp() as u64 + 600
    }

    #[test]
    fn mints_and_verifies() {
        let a = auth();
        let t = a
            .mint(
                "alice",
                Role::Viewer,
                Some("Alice"),
                Duration::from_secs(60),
            )
            .unwrap();
        let p = a.verify(&t).unwrap();
        assert_eq!(p.user_id, "alice");
        assert_eq!(p.role, Role::Viewer);
        assert_eq!(p.name, "Alice");
        assert_eq!(a.verify_header(Some(&format!("Bearer {t}"))).unwrap(), p);
    }

    #[test]
    fn reads_the_authorization_header_of_a_request() {
        let a = auth();
        let t = a
            .mint("bob", Role::Viewer, None, Duration::from_secs(60))
            .unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(authorization(&h), Ok(None));
        assert_eq!(a.verify_request(&h), Err(AuthError::Missing));
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert_eq!(authorization(&h), Ok(Some(format!("Bearer {t}").as_str())));
        assert_eq!(a.verify_request(&h).unwrap().user_id, "bob");
        h.insert(
            header::AUTHORIZATION,
            axum::http::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        assert_eq!(authorization(&h), Err(AuthError::Invalid));
        assert_eq!(a.verify_request(&h), Err(AuthError::Invalid));
        h.insert(header::AUTHORIZATION, format!("Basic {t}").parse().unwrap());
        assert_eq!(a.verify_request(&h), Err(AuthError::Invalid));
    }

    #[test]
    fn refuses_attacks() {
        let a = auth();
        let hs = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let ok = serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause", "exp": future()});
        assert!(a.verify(&raw(hs.clone(), ok.clone(), SECRET)).is_ok());
        // alg: none with an empty signature.
        let none = format!(
            "{}.{}.",
            base64_like::encode(br#"{"alg":"none","typ":"JWT"}"#),
            base64_like::encode(ok.to_string().as_bytes())
        );
        assert_eq!(a.verify(&none), Err(AuthError::Invalid));
        // Wrong key.
        assert_eq!(
            a.verify(&raw(
                hs.clone(),
                ok.clone(),
                b"another-secret-another-secret-xx"
            )),
            Err(AuthError::Invalid)
        );
        // Expired.
        let expired =
            serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause", "exp": 1000});
        assert_eq!(
            a.verify(&raw(hs.clone(), expired, SECRET)),
            Err(AuthError::Expired)
        );
        // No exp, wrong issuer, bad role, bad sub.
        for claims in [
            serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause"}),
            serde_json::json!({"sub": "alice", "role": "viewer", "iss": "other", "exp": future()}),
            serde_json::json!({"sub": "alice", "role": "root", "iss": "applause", "exp": future()}),
            serde_json::json!({"sub": "al ice", "role": "viewer", "iss": "applause", "exp": future()}),
            serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause", "exp": future(), "name": "a\nb"}),
        ] {
            assert_eq!(
                a.verify(&raw(hs.clone(), claims.clone(), SECRET)),
                Err(AuthError::Invalid),
                "{claims}"
            );
        }
        // HS512 is not HS256.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause", "exp": future()}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::Invalid));
        assert_eq!(a.verify_header(None), Err(AuthError::Missing));
        assert_eq!(a.verify_header(Some("Basic abc")), Err(AuthError::Invalid));
        assert_eq!(a.verify("garbage"), Err(AuthError::Invalid));
    }

    #[test]
    fn not_yet_valid_and_oversized_tokens_are_refused() {
        let a = auth();
        let hs = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let now = chrono::Utc::now().timestamp() as u64;
        let claims = |nbf: u64| serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause", "exp": future(), "nbf": nbf});
        assert_eq!(
            a.verify(&raw(hs.clone(), claims(now + 300), SECRET)),
            Err(AuthError::Invalid)
        );
        assert!(a.verify(&raw(hs.clone(), claims(now - 60), SECRET)).is_ok());
        // A genuine signature does not make an oversized token acceptable.
        let mut big = serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause", "exp": future()});
        big["pad"] = serde_json::Value::String("x".repeat(TOKEN_BYTES_MAX));
        let big = raw(hs, big, SECRET);
        assert!(big.len() > TOKEN_BYTES_MAX);
        assert_eq!(a.verify(&big), Err(AuthError::Invalid));
    }

    #[test]
    fn a_verified_token_answers_the_same_from_the_cache() {
        let a = auth();
        let hs = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let now = chrono::Utc::now().timestamp() as u64;
        let good = raw(
            hs.clone(),
            serde_json::json!({"sub": "alice", "role": "viewer", "iss": "applause", "exp": future(), "nbf": now - 60, "name": "Al"}),
            SECRET,
        );
        let first = a.verify(&good).unwrap();
        assert_eq!(a.verify(&good), Ok(first.clone()));
        // A clone shares the cache and answers alike.
        assert_eq!(a.clone().verify(&good), Ok(first));
        // The same claims under another signature are still refused after
        // the genuine token was cached.
        let (body, _) = good.rsplit_once('.').unwrap();
        assert_eq!(a.verify(&format!("{body}.AAAA")), Err(AuthError::Invalid));
        // A token whose nbf is not an integer is verified every time, and
        // answers as jsonwebtoken does.
        let odd = raw(
            hs,
            serde_json::json!({"sub": "bob", "role": "viewer", "iss": "applause", "exp": future(), "nbf": "soon"}),
            SECRET,
        );
        let once = a.verify(&odd);
        assert_eq!(a.verify(&odd), once);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Authenticator::new(b"short").is_err());
    }
}
