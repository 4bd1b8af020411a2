//! The `--redis-url` forms: one server (`redis://`, `rediss://`, `unix://`)
//! or a Redis Cluster given by its seed nodes (`redis+cluster://`).
//!
//! redis-rs has no URL for a cluster (its `ClusterClient` takes a list of
//! node URLs), and operators are used to one setting naming several nodes
//! (`host:port,host:port`, as in Lettuce's and Spring's cluster node lists).
//! So the form is `redis+cluster://[user[:password]@]host:port[,host:port…][/]`:
//! the scheme says "cluster" explicitly (a single seed is still a cluster),
//! the credentials apply to every node, and there is no database number
//! (a cluster only has database 0).

/// Most seed nodes accepted in one URL (a typo guard; a cluster needs few).
const SEEDS_MAX: usize = 64;

/// Port of a seed given without one.
const DEFAULT_PORT: u16 = 6379;

/// The URL scheme of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where the Redis-backed parts connect.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, as a URL redis-rs opens itself.
    Server(String),
    /// A Redis Cluster: its seed nodes as `redis://` URLs (credentials
    /// included); the topology is discovered from them.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisTarget {
    // Never prints the URLs: they may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(_) => f.write_str("RedisTarget::Server"),
            Self::Cluster(seeds) => write!(f, "RedisTarget::Cluster({} seeds)", seeds.len()),
        }
    }
}

impl RedisTarget {
    /// Parses a `--redis-url`. The error says what is wrong without echoing
    /// the URL (it may carry a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            return parse_cluster(rest).map(Self::Cluster);
        }
        if ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Ok(Self::Server(url.to_owned()));
        }
        Err("must start with redis://, rediss://, unix:// or redis+cluster://".into())
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The URLs a plain (non-cluster) connection may use, in order of
    /// preference: the server, or every seed node.
    pub fn node_urls(&self) -> &[String] {
        match self {
            Self::Server(url) => std::slice::from_ref(url),
            Self::Cluster(seeds) => seeds,
        }
    }
}

fn parse_cluster(rest: &str) -> Result<Vec<String>, String> {
    if rest.contains(['?', '#']) {
        return Err("a redis+cluster:// URL takes no query or fragment".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !(path.is_empty() || path == "0") {
        return Err("a Redis Cluster has only database 0: end the URL with / or nothing".into());
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) if !userinfo.is_empty() => (Some(userinfo), hosts),
        Some(_) => return Err("empty credentials before @".into()),
        None => (None, authority),
    };
    if hosts.is_empty() {
        return Err("a redis+cluster:// URL needs at least one host:port".into());
    }
    let mut seeds = Vec::new();
    for node in hosts.split(',') {
        let (host, port) = parse_node(node)?;
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        seeds.push(format!("redis://{auth}{host}:{port}/"));
        if seeds.len() > SEEDS_MAX {
            return Err(format!("more than {SEEDS_MAX} seed nodes"));
        }
    }
    Ok(seeds)
}

/// `host[:port]` or `[ipv6][:port]`.
fn parse_node(node: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = node.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("seed {node:?}: unclosed ["))?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(format!("seed {node:?}: not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("seed {node:?}: expected :port after ]"))?,
            ),
        };
        (&node[..addr.len() + 2], port)
    } else {
        let (host, port) = match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
        if !host_ok {
            return Err(format!(
                "seed {node:?}: expected host:port (host of letters, digits, . - _)"
            ));
        }
        (host, port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("seed {node:?}: port must be 1-65535"))?,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_pass_through() {
        for url in [
            "redis://127.0.0.1:6379/",
            "rediss://h:1/2",
            "unix:///tmp/r.sock",
        ] {
            assert_eq!(RedisTarget::parse(url), Ok(RedisTarget::Server(url.into())));
        }
    }

    #[test]
    fn cluster_urls_list_every_seed_with_the_shared_credentials() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://u:p%40ss@10.0.0.1:7000,node-b,[::1]:7002/"),
            Ok(RedisTarget::Cluster(vec![
                "redis://u:p%40ss@10.0.0.1:7000/".into(),
                "redis://u:p%40ss@node-b:6379/".into(),
                "redis://u:p%40ss@[::1]:7002/".into(),
            ]))
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://h:7000").map(|t| t.node_urls().to_vec()),
            Ok(vec!["redis://h:7000/".to_owned()])
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_password() {
        for url in [
            "http://h:1",
            "redis+cluster://",
            "redis+cluster:///",
            "redis+cluster://h:1,",
            "redis+cluster://h:0",
            "redis+cluster://h:70000",
            "redis+cluster://h:x",
            "redis+cluster://h:1/3",
            "redis+cluster://h:1/?protocol=3",
            "redis+cluster://@h:1",
            "redis+cluster://[::1",
            "redis+cluster://[zz]:1",
            "redis+cluster://h h:1",
            "redis+cluster://secret@",
        ] {
            let error = RedisTarget::parse(url).expect_err(url);
            assert!(!error.contains("secret"), "{url}: {error}");
        }
        let too_many = vec!["h:1"; SEEDS_MAX + 1].join(",");
        assert!(RedisTarget::parse(&format!("redis+cluster://{too_many}")).is_err());
    }

    #[test]
    fn debug_hides_the_urls() {
        let target = RedisTarget::parse("redis+cluster://u:secret@h:1").unwrap();
        assert_eq!(format!("{target:?}"), "RedisTarget::Cluster(1 seeds)");
    }
}
