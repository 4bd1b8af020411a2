//! Bad configuration exits non-zero naming the value, before binding; the
//! maintenance subcommands work on a real data directory.

use crate::common::*;

fn fails_naming(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut cmd = bin();
    cmd.args(args).arg("--data-dir").arg(dir.path());
    if !args.contains(&"--bind") {
        cmd.args(["--bind", &bind]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr {stderr:?} does not name {needle:?}"
    );
    // Nothing was bound: the port is still free.
    std::net::TcpListener::bind(&bind).expect("the port was left bound");
}

#[test]
fn bad_values_exit_naming_them() {
    fails_naming(&["serve", "--bind", "nope"], &[], "--bind");
    fails_naming(&["serve", "--fee-apple", "1.5"], &[], "--fee-apple");
    fails_naming(&["serve", "--fee-web", "abc"], &[], "--fee-web");
    fails_naming(
        &["serve", "--broadcaster-share=-0.1"],
        &[],
        "--broadcaster-share",
    );
    fails_naming(
        &["serve", "--broadcaster-share-override", "bob"],
        &[],
        "--broadcaster-share-override",
    );
    fails_naming(&["serve", "--currency", "dollars"], &[], "--currency");
    fails_naming(
        &["serve", "--catalog", "/nonexistent/catalog.toml"],
        &[],
        "--catalog",
    );
    fails_naming(
        &["serve", "--database-url", "mysql://x"],
        &[],
        "--database-url",
    );
    fails_naming(&["serve", "--redis-url", "http://x"], &[], "--redis-url");
    fails_naming(
        &["serve", "--redis-url", "redis+cluster://h:0/"],
        &[],
        "--redis-url",
    );
    fails_naming(
        &["serve", "--gift-rate-per-s", "0"],
        &[],
        "--gift-rate-per-s",
    );
    fails_naming(&["serve", "--log-format", "xml"], &[], "--log-format");
    fails_naming(&["serve", "--batch-max", "0"], &[], "--batch-max");
    fails_naming(
        &["serve", "--leaderboard-push-ms", "10"],
        &[],
        "--leaderboard-push-ms",
    );
    fails_naming(
        &["serve", "--leaderboard-push-ms", "soon"],
        &[],
        "--leaderboard-push-ms",
    );
    fails_naming(
        &["serve"],
        &[("APPLAUSE_JWT_SECRET", "short")],
        "APPLAUSE_JWT_SECRET",
    );
    fails_naming(&["serve"], &[("APPLAUSE_FEE_GOOGLE", "2")], "--fee-google");
    fails_naming(&["gifts"], &[], "--redis-url");
    fails_naming(&["token", "--sub", "a b", "--role", "viewer"], &[], "--sub");
    fails_naming(&["token", "--sub", "a", "--role", "root"], &[], "--role");
    fails_naming(
        &[
            "token", "--sub", "a", "--role", "viewer", "--ttl", "forever",
        ],
        &[],
        "--ttl",
    );
    fails_naming(
        &[
            "report",
            "revenue",
            "--from",
            "2026-13-01",
            "--to",
            "2026-12-02",
        ],
        &[],
        "--from",
    );
    fails_naming(
        &[
            "report",
            "revenue",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-02",
            "--group-by",
            "hour",
        ],
        &[],
        "--group-by",
    );
}

#[test]
fn catalog_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(
        &path,
        "[[sticker]]\nid = \"x\"\nname = \"X\"\nprice = \"1.001\"\n",
    )
    .unwrap();
    fails_naming(
        &["serve", "--catalog", path.to_str().unwrap()],
        &[],
        "1.001",
    );
}

#[test]
fn token_is_signed_with_the_data_dir_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_applause"))
        .env_remove("APPLAUSE_JWT_SECRET")
        .args([
            "token",
            "--sub",
            "alice",
            "--role",
            "viewer",
            "--name",
            "Alice",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let secret = std::fs::read_to_string(dir.path().join("jwt-secret")).unwrap();
    let p = applause_web::Authenticator::new(secret.trim().as_bytes())
        .unwrap()
        .verify(token.trim())
        .unwrap();
    assert_eq!((p.user_id.as_str(), p.name.as_str()), ("alice", "Alice"));
}
