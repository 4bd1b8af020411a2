//! Property tests of the JWT authenticator: a minted token verifies back to
//! its `sub`, `role` and `name`; every change of one byte of a genuine token
//! is refused; any text as a token or header never panics and is never
//! accepted. Case count: `APPLAUSE_PROP_CASES` (a tenth: each case signs).

use std::time::Duration;

use applause_core::Role;
use applause_web::{AuthError, Authenticator};
use proptest::prelude::*;

const SECRET: &[u8] = b"jwt-props-secret-0123456789abcdef";

fn cases() -> u32 {
    let all = std::env::var("APPLAUSE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000u32);
    (all / 10).max(100)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Viewer),
        Just(Role::Broadcaster),
        Just(Role::Finance),
        Just(Role::Admin),
    ]
}

fn auth() -> Authenticator {
    Authenticator::new(SECRET).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mint_then_verify_round_trips(
        user in "[A-Za-z0-9_-]{1,64}",
        role in role(),
        name in prop::option::of("[^\\p{C}]{0,40}[^\\p{C}\\s]"),
        ttl in 60u64..=86_400 * 30,
    ) {
        let a = auth();
        let token = a.mint(&user, role, name.as_deref(), Duration::from_secs(ttl)).unwrap();
        let p = a.verify(&token).unwrap();
        prop_assert_eq!(&p.user_id, &user);
        prop_assert_eq!(p.role, role);
        prop_assert_eq!(&p.name, name.as_ref().unwrap_or(&user));
        prop_assert_eq!(a.verify_header(Some(&format!("Bearer {token}"))), Ok(p));
    }

    #[test]
    fn any_single_byte_change_is_refused(
        user in "[A-Za-z0-9_-]{1,64}",
        role in role(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let a = auth();
        let token = a.mint(&user, role, None, Duration::from_secs(3600)).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let mutated = String::from_utf8_lossy(&bytes);
        prop_assert!(a.verify(&mutated).is_err(), "accepted {mutated:?} (from {token:?})");
    }

    #[test]
    fn another_key_is_refused(user in "[A-Za-z0-9_-]{1,64}", role in role(), key in prop::collection::vec(any::<u8>(), 32..64)) {
        prop_assume!(key != SECRET);
        let token = Authenticator::new(&key).unwrap().mint(&user, role, None, Duration::from_secs(3600)).unwrap();
        prop_assert_eq!(auth().verify(&token), Err(AuthError::Invalid));
    }

    #[test]
    fn any_text_never_panics_nor_passes(text in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,43}",
        "eyJ[A-Za-z0-9_-]{0,40}\\.eyJ[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,43}",
    ]) {
        let a = auth();
        prop_assert!(a.verify(&text).is_err());
        prop_assert!(a.verify_header(Some(&text)).is_err());
        let header = format!("Bearer {text}");
        prop_assert!(a.verify_header(Some(&header)).is_err());
    }
}
