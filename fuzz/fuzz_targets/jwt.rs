//! JWTs (`Authenticator::verify`, `verify_header`): never a panic on any
//! text; a token the fuzzer builds without the secret is never accepted
//! (the only way in is a signature, which it cannot forge); and any change
//! of one byte of a genuine token is refused.
#![no_main]

use std::time::Duration;

use applause_core::Role;
use applause_web::Authenticator;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef-0123";

fuzz_target!(|data: &[u8]| {
    let auth = Authenticator::new(SECRET).expect("authenticator");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // Arbitrary text as a token and as a header.
        let text = String::from_utf8_lossy(rest);
        assert!(
            auth.verify(&text).is_err(),
            "forged token accepted: {text:?}"
        );
        assert!(auth.verify_header(Some(&text)).is_err());
        return;
    }
    // A genuine token with one byte changed (position and new value from
    // the input).
    let [a, b, c, ..] = rest else { return };
    let token = auth
        .mint(
            "fuzz-user",
            Role::Viewer,
            Some("Fuzz"),
            Duration::from_secs(3600),
        )
        .expect("mint");
    assert!(auth.verify(&token).is_ok());
    let mut bytes = token.into_bytes();
    let at = (usize::from(*a) << 8 | usize::from(*b)) % bytes.len();
    if bytes[at] == *c {
        return;
    }
    bytes[at] = *c;
    let mutated = String::from_utf8_lossy(&bytes);
    assert!(
        auth.verify(&mutated).is_err(),
        "mutated token accepted: {mutated:?}"
    );
});
