//! Opening many WebSocket connections: the file-descriptor limit, loopback
//! source addresses (each 127.0.0.x has its own ~28k ephemeral ports), and a
//! handshake over a socket we bound ourselves.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Raises the soft RLIMIT_NOFILE to the hard limit, and the hard limit too when
/// allowed (root), so tens of thousands of sockets fit. Returns the new soft limit.
// The workspace denies unsafe code; getrlimit/setrlimit have no safe wrapper in
// the allowed dependencies, and this is the one place that needs them.
#[allow(unsafe_code)]
pub fn raise_nofile_limit(wanted: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let old = lim;
        if lim.rlim_max < wanted as libc::rlim_t {
            lim.rlim_max = wanted as libc::rlim_t;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            // Not allowed to raise the hard limit: settle for soft = hard.
            lim = old;
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    // rlim_t is u64 on Linux; the conversion keeps other targets compiling.
    #[allow(clippy::unnecessary_cast)]
    let soft = lim.rlim_cur as u64;
    soft
}

/// Loopback source addresses used one after the other: the next one is taken
/// when the current one has no ephemeral port left.
#[derive(Debug)]
pub struct SourcePool {
    addrs: Vec<Ipv4Addr>,
    current: AtomicUsize,
}

impl SourcePool {
    pub fn new(addrs: Vec<Ipv4Addr>) -> Self {
        Self {
            addrs,
            current: AtomicUsize::new(0),
        }
    }

    /// How many addresses have been put to use so far.
    pub fn in_use(&self) -> usize {
        (self.current.load(Ordering::Relaxed) + 1).min(self.addrs.len())
    }

    /// Connects a TCP socket to `dest`, from the current source address when
    /// `dest` is loopback, moving on when the address runs out of ports.
    pub async fn connect(&self, dest: SocketAddr) -> Result<TcpStream> {
        if !dest.ip().is_loopback() || !dest.is_ipv4() {
            return Ok(TcpStream::connect(dest).await?);
        }
        loop {
            let idx = self.current.load(Ordering::Relaxed);
            let Some(src) = self.addrs.get(idx) else {
                bail!("all {} source addresses are out of ports", self.addrs.len());
            };
            let socket = TcpSocket::new_v4()?;
            let attempt = async {
                socket.bind(SocketAddr::new(IpAddr::V4(*src), 0))?;
                socket.connect(dest).await
            };
            match attempt.await {
                Ok(stream) => return Ok(stream),
                Err(e) if is_out_of_ports(&e) => {
                    // Several connects may see exhaustion at once: only advance once.
                    let _ = self.current.compare_exchange(
                        idx,
                        idx + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn is_out_of_ports(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
    )
}

/// Small buffers: a viewer receives small frames and sends almost nothing,
/// and 50,000 of them must fit in the client's memory too.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// `http://h:p/x` → `ws://h:p/x` (and https → wss); ws URLs pass through.
pub fn to_ws_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_owned()
    }
}

/// Opens a WebSocket to `url` (ws://), TCP first from the pool, then the handshake.
pub async fn connect_ws(url: &str, pool: &SourcePool) -> Result<Ws> {
    let request = url
        .into_client_request()
        .with_context(|| format!("bad WebSocket URL {url}"))?;
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        bail!("only ws:// URLs are supported (got {url})");
    }
    let host = uri.host().ok_or_else(|| anyhow!("no host in {url}"))?;
    let port = uri.port_u16().unwrap_or(80);
    let dest = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow!("{host} has no IPv4 address"))?;
    let stream = pool.connect(dest).await?;
    stream.set_nodelay(true)?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_leave_from_the_pool_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = listener.local_addr().unwrap();
        let pool = SourcePool::new(vec![
            Ipv4Addr::new(127, 0, 0, 3),
            Ipv4Addr::new(127, 0, 0, 4),
        ]);
        let _client = pool.connect(dest).await.unwrap();
        let (_server_side, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn the_open_file_limit_never_goes_down() {
        let before = raise_nofile_limit(0);
        assert!(raise_nofile_limit(1024) >= before.min(1024));
        assert_eq!(to_ws_url("http://h:1/x"), "ws://h:1/x");
        assert_eq!(to_ws_url("ws://h:1/x"), "ws://h:1/x");
    }
}
