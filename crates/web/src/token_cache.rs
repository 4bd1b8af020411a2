//! Tokens already verified, so a client that sends the same bearer token on
//! every request (a sender buying hundreds of gifts) pays for the HMAC and
//! the JSON decoding once. A hit is the same bytes as a token that passed
//! every check — signature, algorithm, issuer, claims — so only the time
//! checks can change their answer, and they run again on every hit, with
//! jsonwebtoken's arithmetic. Tokens whose `nbf` is not a plain integer are
//! never kept (they always take the full path). The cache is bounded: when
//! full it starts over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::{AuthError, Principal};

/// Tokens kept at most.
pub(crate) const TOKENS_MAX: usize = 4_096;

#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub principal: Principal,
    pub exp: u64,
    pub nbf: Option<u64>,
}

impl Verified {
    /// The time checks of a verified token at `now` (seconds), as
    /// jsonwebtoken makes them: expired when `exp < now - leeway`, not yet
    /// valid when `nbf > now + leeway`.
    pub fn check_times(&self, now: u64, leeway: u64) -> Result<(), AuthError> {
        if self.exp < now.saturating_sub(leeway) {
            return Err(AuthError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err(AuthError::Invalid);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TokenCache {
    tokens: Arc<Mutex<HashMap<Box<str>, Verified>>>,
}

impl TokenCache {
    pub fn get(&self, token: &str) -> Option<Verified> {
        self.tokens.lock().ok()?.get(token).cloned()
    }

    pub fn insert(&self, token: &str, verified: Verified) {
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() >= TOKENS_MAX {
                tokens.clear();
            }
            tokens.insert(token.into(), verified);
        }
    }

    pub fn remove(&self, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(token);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tokens.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use applause_core::ids::Role;

    use super::*;

    fn verified(exp: u64, nbf: Option<u64>) -> Verified {
        Verified {
            principal: Principal {
                user_id: "alice".into(),
                role: Role::Viewer,
                name: "alice".into(),
            },
            exp,
            nbf,
        }
    }

    #[test]
    fn time_checks_match_jsonwebtoken_at_the_edges() {
        // exp: valid through now - leeway, expired one second later.
        assert_eq!(verified(995, None).check_times(1000, 5), Ok(()));
        assert_eq!(
            verified(994, None).check_times(1000, 5),
            Err(AuthError::Expired)
        );
        // nbf: valid from now + leeway.
        assert_eq!(verified(2000, Some(1005)).check_times(1000, 5), Ok(()));
        assert_eq!(
            verified(2000, Some(1006)).check_times(1000, 5),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::default();
        for i in 0..TOKENS_MAX + 10 {
            cache.insert(&format!("t{i}"), verified(1, None));
        }
        assert!(cache.len() <= TOKENS_MAX);
        assert!(cache.get(&format!("t{}", TOKENS_MAX + 9)).is_some());
    }
}
