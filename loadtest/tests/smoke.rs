//! A short end-to-end run against the real `applause serve`: a few hundred
//! viewers, a few senders, seconds of load, and the verifier must come back
//! clean (every gift to every viewer once and in order, finance and
//! leaderboards equal to what was bought).
//!
//! The `applause` binary is another package's: it is found next to this test's
//! own build output (`scripts/test.sh` builds every binary before the tests).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "smoke-test-secret-0123456789abcdef0123";

fn applause_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/smoke-<hash> → target/<profile>/applause
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = profile_dir.join("applause");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_short_run_against_applause_serve_verifies_clean() {
    let dir = tempfile_dir();
    let port = free_port();
    let server = Server(
        Command::new(applause_bin())
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&dir)
            .args(["--gift-rate-per-s", "1000", "--gift-burst", "1000"])
            .env("APPLAUSE_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start applause serve"),
    );
    let up = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "applause serve did not come up");
    let report = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_applause-loadtest"))
        .args([
            "run",
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--jwt-secret",
            SECRET,
        ])
        .args([
            "--rooms",
            "1",
            "--viewers",
            "200",
            "--senders",
            "5",
            "--rate",
            "40",
        ])
        .args([
            "--duration",
            "4s",
            "--warmup",
            "1s",
            "--ack-share",
            "0.2",
            "--message-share",
            "0.3",
        ])
        .arg("--json")
        .arg(&report)
        .output()
        .expect("run applause-loadtest");
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the load generator found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["verification"]["ok"], true, "{stdout}");
    assert!(json["gifts"]["created"].as_u64().unwrap() > 0, "{stdout}");
    assert!(
        json["deliveries"]["total"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "applause-smoke-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
