//! Starting and stopping the real binary.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SECRET: &str = "process-test-secret-0123456789abcdef";

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_applause"));
    c.env("APPLAUSE_JWT_SECRET", SECRET).env("RUST_LOG", "warn");
    c
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `applause serve` on `port` with its data in `dir`; waits until it answers.
pub async fn serve(dir: &Path, port: u16) -> Child {
    let mut child = bin()
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .args(["--gift-rate-per-s", "100000", "--gift-burst", "100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start applause serve");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status().is_success() {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("applause serve did not come up on port {port}");
}

pub fn token(sub: &str, role: applause_core::Role) -> String {
    applause_web::Authenticator::new(SECRET.as_bytes())
        .unwrap()
        .mint(sub, role, None, Duration::from_secs(3600))
        .unwrap()
}
