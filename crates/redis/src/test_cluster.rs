//! A throwaway Redis Cluster for tests (feature `test-cluster`): three
//! masters on loopback ports the OS picked, created with `redis-cli --cluster
//! create`, their state in a temporary directory, killed on drop — and when
//! the test process dies, however it dies: each server runs under a small
//! shell that kills it once the pipe from the test process closes, so even
//! the cluster a test binary keeps in a `static` ([`shared`]) never outlives
//! it. Needs `redis-server` and `redis-cli` 7.0+ (`--cluster-port`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Masters of a test cluster (no replicas: the tests exercise routing, not
/// failover).
const MASTERS: usize = 3;

/// How long starting may take before it is reported as failed (a readiness
/// bound, not a timed assertion: a slow machine only waits longer).
const START_WAIT: Duration = Duration::from_secs(60);

/// How long one attempt waits for its servers to answer before it picks new
/// ports (a server whose port was taken exits at once; a healthy one answers
/// in milliseconds), and how many attempts there are.
const PING_WAIT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 4;

/// A running three-master cluster; dropping it kills the servers.
pub struct TestCluster {
    ports: Vec<u16>,
    /// Each server's keeper shell and the pipe whose closing ends it.
    servers: Vec<(Child, Option<ChildStdin>)>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts the servers and forms the cluster; panics with the reason if
    /// that fails (a test cannot go on without it). The ports are picked by
    /// the OS and released just before the servers bind them, so another
    /// process may take one meanwhile: a server that does not answer is
    /// given up with its whole attempt, and the start tried again on new
    /// ports.
    pub fn start() -> Self {
        for _ in 1..START_ATTEMPTS {
            if let Some(cluster) = Self::try_start(PING_WAIT) {
                return cluster;
            }
        }
        Self::try_start(START_WAIT).expect("test cluster: redis-server never answered PING")
    }

    fn try_start(ping_wait: Duration) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        // A client port and a cluster-bus port per master, all picked by the
        // OS and held until every one is known, so none is picked twice.
        let listeners: Vec<TcpListener> = (0..MASTERS * 2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("free loopback port"))
            .collect();
        let picked: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("port").port())
            .collect();
        drop(listeners);
        let (ports, bus_ports) = picked.split_at(MASTERS);
        let mut cluster = Self {
            ports: ports.to_vec(),
            servers: Vec::new(),
            _dir: dir,
        };
        for (&port, &bus_port) in ports.iter().zip(bus_ports) {
            let server = spawn_server(cluster._dir.path(), port, bus_port);
            cluster.servers.push(server);
        }
        let ping_deadline = Instant::now() + ping_wait;
        for &port in ports {
            while !ping(port) {
                if Instant::now() >= ping_deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let deadline = Instant::now() + START_WAIT;
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for &port in ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for &port in ports {
            wait_until(
                deadline,
                || cluster_ok(port, MASTERS),
                "every node sees cluster_state:ok with every master",
            );
        }
        Some(cluster)
    }

    /// The `redis+cluster://` URL naming every master as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}/", seeds.join(","))
    }

    /// The masters' client ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// A plain `redis://` URL of one master (for checks on that node alone).
    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.ports[i])
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (keeper, lifeline) in &mut self.servers {
            drop(lifeline.take());
            let _ = keeper.wait();
        }
    }
}

/// One cluster shared by every test of a test binary, started on first use.
pub fn shared() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(TestCluster::start)
}

fn spawn_server(dir: &Path, port: u16, bus_port: u16) -> (Child, Option<ChildStdin>) {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node dir");
    // The keeper: runs the server, waits for EOF on its stdin (the test
    // process closed the pipe or died), then kills the server.
    const KEEPER: &str = r#"redis-server "$@" & pid=$!; cat >/dev/null; kill -9 $pid; wait"#;
    let mut keeper = Command::new("sh")
        .arg("-c")
        .arg(KEEPER)
        .arg("sh")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes"])
        .arg("--port")
        .arg(port.to_string())
        .arg("--cluster-port")
        .arg(bus_port.to_string())
        .arg("--cluster-config-file")
        .arg(node_dir.join("nodes.conf"))
        .arg("--dir")
        .arg(&node_dir)
        .arg("--logfile")
        .arg(node_dir.join("redis.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh and redis-server");
    let lifeline = keeper.stdin.take();
    (keeper, lifeline)
}

fn node(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()
}

fn ping(port: u16) -> bool {
    node(port)
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
        .is_some()
}

fn cluster_ok(port: u16, masters: usize) -> bool {
    let Some(info) = node(port).and_then(|mut c| {
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut c)
            .ok()
    }) else {
        return false;
    };
    info.contains("cluster_state:ok")
        && info.contains(&format!("cluster_known_nodes:{masters}"))
        && info.contains(&format!("cluster_size:{masters}"))
}

/// Polls `ready` until it holds (start-up readiness, not a timing claim).
fn wait_until(deadline: Instant, mut ready: impl FnMut() -> bool, what: &str) {
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "test cluster: timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
