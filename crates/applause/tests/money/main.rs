//! HTTP-level tests of the money features of issue 6: gift refunds,
//! broadcaster statements and red packets. Each test starts a real server
//! in-process on `127.0.0.1:0` and talks to it with `reqwest`; every error
//! code of the new endpoints is reached, and nothing moves on any error.

// The HTTP suite's harness, shared rather than copied; not every helper is
// used here.
#[allow(dead_code)]
#[path = "../http/common.rs"]
mod common;

mod redpackets;
mod refunds;
mod statements;
