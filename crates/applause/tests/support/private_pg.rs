//! A PostgreSQL server of a test's own, which the test may crash and restart
//! (the shared server on 5432 must never be: other test binaries use it).
//! Shared by the test binaries through
//! `#[path = "../support/private_pg.rs"] mod private_pg;`.
//!
//! `initdb` into a temporary directory (trust authentication, `fsync` on),
//! the postmaster listening on 127.0.0.1 on a free port with its socket in
//! that directory, run as the `postgres` user when the test runs as root
//! (initdb refuses root). The postmaster is the test's own child process,
//! not `pg_ctl start`'s orphan: after a `kill -9` the test reaps it, so no
//! zombie keeps `postmaster.pid` looking alive. Dropping it stops the server
//! and removes the directory. Nothing is skipped: without the PostgreSQL
//! server binaries it panics and names the package.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The temporary directories' prefix (a leftover of a killed run is swept).
const DIR_PREFIX: &str = "applause-citest-pg-";
/// How long a start (crash recovery included) may take on a loaded machine.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running (or deliberately stopped) PostgreSQL server of the test's own.
pub struct PrivatePg {
    pub port: u16,
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    /// (uid, gid) the server runs as: `postgres` when the test is root.
    owner: Option<(u32, u32)>,
    postmaster: Option<Child>,
    /// `name=value` server settings of the test's own, on every start.
    settings: Vec<String>,
    /// Every start so far (the first is 1).
    pub starts: usize,
}

impl PrivatePg {
    /// `initdb`, then the server started and accepting connections.
    pub async fn start() -> PrivatePg {
        PrivatePg::start_with(&[]).await
    }

    /// The same, with server settings of the test's own (`name=value`).
    pub async fn start_with(settings: &[&str]) -> PrivatePg {
        let bin = bindir();
        let owner = server_owner();
        sweep_leftovers(&bin, owner);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string())
            .expect("write owner.pid");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the pg dir");
        }
        let port = free_port();
        let mut pg = PrivatePg {
            port,
            bin,
            dir: Some(dir),
            owner,
            postmaster: None,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            starts: 0,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            // The cluster is created once per test: skipping initdb's own
            // fsyncs only speeds that up; the server runs with fsync on.
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_again().await;
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/{db}`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` (the server must be up).
    pub async fn create_database(&self, name: &str) {
        use sqlx::{Connection, Executor};
        let mut c = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private PostgreSQL");
        c.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("create database");
        let _ = c.close().await;
    }

    /// Whether the postmaster runs.
    pub fn is_up(&mut self) -> bool {
        self.postmaster
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the server (after a stop or a kill) and waits until it accepts
    /// connections, crash recovery included. After a `kill -9` the old
    /// server's backends exit only when they notice their postmaster is
    /// gone; until then a new postmaster refuses to start ("pre-existing
    /// shared memory block is still in use"), so a start is retried.
    pub async fn start_again(&mut self) {
        assert!(!self.is_up(), "PostgreSQL is already running");
        let deadline = Instant::now() + START_DEADLINE;
        let log = self.log_path();
        'spawn: loop {
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("postgres.log");
            if let Some((uid, gid)) = self.owner {
                let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
            }
            let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let child = self
                .command("postgres")
                .arg("-D")
                .arg(self.data())
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", self.dir().display()))
                .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
                .args(["-c", "shared_buffers=16MB", "-c", "max_connections=60"])
                .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log"))
                .stderr(log_file)
                .spawn()
                .expect("start postgres");
            self.postmaster = Some(child);
            self.starts += 1;
            loop {
                if !self.is_up() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let this_start = text.get(log_start as usize..).unwrap_or(&text);
                    let orphans_left = this_start.contains("is still in use")
                        || this_start.contains("already exists");
                    self.postmaster = None;
                    assert!(
                        orphans_left && Instant::now() < deadline,
                        "postgres exited while starting:\n{}",
                        self.log_tail(30)
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'spawn;
                }
                if self.accepts().await {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "PostgreSQL did not accept connections within {START_DEADLINE:?}:\n{}",
                    self.log_tail(30)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// `pg_ctl stop -m immediate`: every backend quits at once, nothing is
    /// flushed, and the next start runs crash recovery.
    pub fn stop_immediate(&mut self) {
        assert!(self.is_up(), "PostgreSQL is not running");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["stop", "-m", "immediate", "-w", "-t", "30"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop -m immediate failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut c) = self.postmaster.take() {
            let _ = c.wait();
        }
    }

    /// `kill -9` of the postmaster (its backends are left to notice).
    pub fn kill9(&mut self) {
        let mut c = self.postmaster.take().expect("PostgreSQL is not running");
        c.kill().expect("kill -9 postgres");
        let _ = c.wait();
    }

    /// The server's log (every start's, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("postgres.log")
    }

    /// The end of the server's log, for a failing test's message.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    async fn accepts(&self) -> bool {
        use sqlx::Connection;
        let connect = sqlx::PgConnection::connect(&self.url("postgres"));
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(c)) => {
                let _ = c.close().await;
                true
            }
            _ => false,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    fn data(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// One of the server's programs, run as the server's owner.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c.current_dir(self.dir()).env_remove("PGDATA");
        c
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.is_up() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["stop", "-m", "immediate", "-w", "-t", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.postmaster.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// The directory of `initdb`, `postgres` and `pg_ctl`: `$APPLAUSE_PG_BINDIR`,
/// else the newest `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
fn bindir() -> PathBuf {
    let has_server = |d: &Path| {
        ["initdb", "postgres", "pg_ctl"]
            .iter()
            .all(|p| d.join(p).is_file())
    };
    if let Some(d) = std::env::var_os("APPLAUSE_PG_BINDIR") {
        let d = PathBuf::from(d);
        assert!(
            has_server(&d),
            "APPLAUSE_PG_BINDIR={} has no initdb, postgres and pg_ctl",
            d.display()
        );
        return d;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .filter(|(_, d)| has_server(d))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return d;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&d) {
            return d;
        }
    }
    panic!(
        "this test starts a PostgreSQL server of its own and found no initdb/postgres/pg_ctl \
         (looked in $APPLAUSE_PG_BINDIR, /usr/lib/postgresql/*/bin and `pg_config --bindir`): \
         install the server (`apt-get install postgresql`) or set APPLAUSE_PG_BINDIR"
    );
}

/// `Some((uid, gid))` of the `postgres` user when the test runs as root
/// (initdb and postgres refuse to), `None` otherwise (run as ourselves).
fn server_owner() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let ids = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == "postgres")
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    });
    Some(ids.expect(
        "the test runs as root, which initdb refuses, and there is no `postgres` user to run \
         PostgreSQL as (the postgresql package creates it)",
    ))
}

/// A port nobody listens on now (the server keeps it across restarts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Stops and removes servers left by test processes that died without
/// dropping theirs (killed runs); a live owner's server is left alone.
fn sweep_leftovers(bin: &Path, owner: Option<(u32, u32)>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = e.path();
        let Ok(pid) = std::fs::read_to_string(dir.join("owner.pid")) else {
            continue;
        };
        if Path::new(&format!("/proc/{}", pid.trim())).exists() {
            continue;
        }
        if dir.join("data/postmaster.pid").exists() {
            let mut c = Command::new(bin.join("pg_ctl"));
            if let Some((uid, gid)) = owner {
                c.uid(uid).gid(gid);
            }
            let _ = c
                .current_dir("/")
                .arg("-D")
                .arg(dir.join("data"))
                .args(["stop", "-m", "immediate", "-w", "-t", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
