//! The `fanout` mode: drive any WebSocket fan-out server (Applause's gateway,
//! nginx+nchan, Node ws) with timestamped messages published by HTTP POST or by
//! WebSocket, and measure publish-to-receive latency at every subscriber.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{parse_duration, parse_source_ips, FanoutArgs};
use crate::metrics::{proc_snapshot, spawn_sampler, Metrics, Percentiles, Timeline};
use crate::net::{connect_ws, raise_nofile_limit, to_ws_url, SourcePool};
use crate::progress::Progress;
use crate::report::{self, Report};
use crate::scan::{str_field, u64_field};
use crate::scenario::{server_stats, summarize, Outcome};
use crate::verify::{Problem, SeqTracker};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A JSON message of about `size` bytes: run id, number, send time (µs since
/// the Unix epoch), whether it is measured, and padding.
pub fn payload(run: &str, n: u64, measured: bool, size: usize) -> String {
    let head = format!(
        r#"{{"type":"bench","r":"{run}","n":{n},"m":{},"ts":{},"pad":""#,
        u8::from(measured),
        now_us()
    );
    let pad = size.saturating_sub(head.len() + 2);
    let mut s = String::with_capacity(head.len() + pad + 2);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

enum Publisher {
    /// HTTP/1.1 POSTs pipelined on one connection: sent on schedule without
    /// waiting for answers (a loaded server answers late, which must not slow
    /// the publish rate) and still in order (one connection is processed in order).
    Http(PipelinedPost),
    Ws(Box<crate::net::Ws>),
}

/// The writing half of a pipelined HTTP/1.1 POST connection; a reader task
/// drains the answers and counts non-2xx statuses as errors.
struct PipelinedPost {
    write: tokio::net::tcp::OwnedWriteHalf,
    head: String,
    reader: tokio::task::JoinHandle<()>,
}

impl PipelinedPost {
    async fn connect(url: &str, pool: &SourcePool, metrics: Arc<Metrics>) -> Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--publish must be http://… or ws://… (got {url})");
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let dest = tokio::net::lookup_host(authority)
            .await?
            .find(std::net::SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow::anyhow!("{authority} has no IPv4 address"))?;
        let stream = pool.connect(dest).await?;
        stream.set_nodelay(true)?;
        let (mut read, write) = stream.into_split();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                // Best effort: status lines of the answers in this chunk.
                let text = String::from_utf8_lossy(&buf[..n]);
                for part in text.split("HTTP/1.1 ").skip(1) {
                    if !part.starts_with('2') {
                        metrics.error(&format!("publish_http_{}", part.get(..3).unwrap_or("?")));
                    }
                }
            }
        });
        Ok(Self {
            write,
            head: format!(
                "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: "
            ),
            reader,
        })
    }

    async fn post(&mut self, body: &str) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let request = format!("{}{}\r\n\r\n{body}", self.head, body.len());
        self.write.write_all(request.as_bytes()).await
    }
}

pub async fn run(a: &FanoutArgs) -> Result<Outcome> {
    let duration = parse_duration(&a.duration)?;
    let warmup = parse_duration(&a.warmup)?;
    let drain = parse_duration(&a.drain)?;
    if a.rate.is_nan() || a.rate <= 0.0 || a.connect_rate <= 0.0 {
        bail!("--rate and --connect-rate must be positive");
    }
    let pool = Arc::new(SourcePool::new(parse_source_ips(&a.source_ips)?));
    raise_nofile_limit(a.subscribers as u64 + 4096);
    let run_id = format!("{:06x}", rand::rng().random::<u32>() & 0xff_ffff);
    let started_at = chrono::Utc::now().to_rfc3339();
    let metrics = Arc::new(Metrics::default());
    let progress = Progress::start(metrics.clone(), a.out.quiet);

    progress.set_phase("connecting");
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Arc::new(AtomicBool::new(false));
    let last_n: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.subscribers).map(|_| AtomicU64::new(0)).collect());
    let mut subs = JoinSet::new();
    let t0 = Instant::now();
    for i in 0..a.subscribers {
        let due = t0 + Duration::from_secs_f64(i as f64 / a.connect_rate);
        tokio::time::sleep_until(due.into()).await;
        let url = to_ws_url(&a.subscribe[i % a.subscribe.len()]);
        let (m, pool, stop, run, started, last_n) = (
            metrics.clone(),
            pool.clone(),
            stop_rx.clone(),
            run_id.clone(),
            started.clone(),
            last_n.clone(),
        );
        subs.spawn(subscriber(i, url, m, pool, stop, run, started, last_n));
    }
    let settle = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle
        && metrics.connected.load(Ordering::Relaxed)
            + metrics.connect_failed.load(Ordering::Relaxed)
            < a.subscribers as u64
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the last handshakes settle server-side before the first message.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let publisher = if a.publish.starts_with("ws://") {
        Publisher::Ws(Box::new(connect_ws(&a.publish, &pool).await?))
    } else {
        Publisher::Http(PipelinedPost::connect(&a.publish, &pool, metrics.clone()).await?)
    };
    progress.set_phase("warm-up");
    started.store(true, Ordering::SeqCst);
    let send_start = Instant::now();
    let timeline = Arc::new(Timeline::default());
    let sampler = spawn_sampler(
        metrics.clone(),
        timeline.clone(),
        send_start,
        a.out.server_pid,
    );
    let total = warmup + duration;
    let publishing = tokio::spawn(publish(
        publisher,
        metrics.clone(),
        run_id.clone(),
        a.rate,
        a.payload_bytes,
        send_start,
        warmup,
        total,
    ));
    tokio::time::sleep_until((send_start + warmup).into()).await;
    let cpu_start = a.out.server_pid.and_then(proc_snapshot);
    let own_start = proc_snapshot(std::process::id());
    let measure_start = Instant::now();
    metrics.measuring.store(true, Ordering::SeqCst);
    progress.set_phase("measuring");
    let (n, first_measured) = publishing.await??;
    metrics.measuring.store(false, Ordering::SeqCst);
    let measured = measure_start.elapsed();
    let cpu_end = a.out.server_pid.and_then(proc_snapshot);
    let own_end = proc_snapshot(std::process::id());

    progress.set_phase("draining");
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline
        && last_n
            .iter()
            .any(|l| l.load(Ordering::Relaxed) < n.saturating_sub(1))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut problems = Vec::new();
    let mut checked = 0u64;
    while let Some(r) = subs.join_next().await {
        let Ok(Some((i, tracker, throughout))) = r else {
            continue;
        };
        let mut mine: Vec<Problem> = tracker
            .missing
            .iter()
            .map(|&seq| Problem::Lost {
                viewer: i,
                seq,
                gift_id: None,
            })
            .collect();
        for a in &tracker.anomalies {
            mine.push(match a {
                crate::verify::Anomaly::Duplicate(seq) => Problem::Duplicate {
                    viewer: i,
                    seq: *seq,
                },
                crate::verify::Anomaly::Reordered(seq) => Problem::Reordered {
                    viewer: i,
                    seq: *seq,
                },
                other => Problem::Stream {
                    viewer: i,
                    what: format!("{other:?}"),
                },
            });
        }
        problems.extend(crate::verify::cap_per_viewer(i, mine));
        if throughout {
            checked += 1;
            let last = tracker.last.unwrap_or(0);
            if tracker.first.is_none_or(|f| f > 0) || last + 1 < n {
                problems.push(Problem::Stream {
                    viewer: i,
                    what: format!("received messages {:?}..={last} of 0..{n}", tracker.first),
                });
            }
        }
    }
    sampler.abort();
    progress.finish();
    let (samples, rss_max) = timeline.take();
    let load = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let measured_s = measured.as_secs_f64().max(1e-9);
    let deliveries_measured = load(&metrics.deliveries_measured);
    let mut report = Report {
        mode: "fanout".into(),
        run_id,
        started_at,
        measured_s,
        ..Report::default()
    };
    for (k, v) in [
        ("publish", a.publish.clone()),
        ("subscribe", a.subscribe.join(",")),
        ("subscribers", a.subscribers.to_string()),
        ("rate", a.rate.to_string()),
        ("payload_bytes", a.payload_bytes.to_string()),
        ("duration_s", duration.as_secs_f64().to_string()),
        ("warmup_s", warmup.as_secs_f64().to_string()),
    ] {
        report.scenario.insert(k.into(), v);
    }
    let published_measured = n - first_measured;
    report.gifts = report::GiftCounts {
        attempted: n,
        created: n,
        per_s: published_measured as f64 / measured_s,
        amount: "0".into(),
        ..Default::default()
    };
    report.deliveries = report::Deliveries {
        total: load(&metrics.deliveries),
        measured: deliveries_measured,
        per_s: deliveries_measured as f64 / measured_s,
    };
    report.viewers = report::ViewerCounts {
        target: a.subscribers as u64,
        connected: load(&metrics.connected),
        connect_failed: load(&metrics.connect_failed),
        disconnected: load(&metrics.disconnected),
        source_addresses_used: pool.in_use(),
    };
    report.latency.gift_to_screen = Percentiles::of(&metrics.screen.total());
    report.latency.connect = Percentiles::of(&metrics.connect.lock().expect("lock").total);
    report.errors = metrics.errors.lock().expect("errors lock").clone();
    report.server = server_stats(
        a.out.server_pid,
        cpu_start,
        cpu_end,
        rss_max,
        deliveries_measured,
        published_measured,
    );
    report.client = server_stats(
        Some(std::process::id()),
        own_start,
        own_end,
        0,
        deliveries_measured,
        published_measured,
    );
    report.timeline = samples;
    report.verification = summarize(&problems, checked, n);
    Ok(Outcome {
        report,
        problems,
        problems_fatal: a.strict,
    })
}

/// Publishes one message at a time, in order, on schedule (`rate` per second
/// from `start` until `total`); returns how many were published and the number
/// of the first measured one. Sequential on purpose: concurrent POSTs could
/// reach the server out of order and look like reordering.
#[allow(clippy::too_many_arguments)]
async fn publish(
    mut publisher: Publisher,
    metrics: Arc<Metrics>,
    run: String,
    rate: f64,
    size: usize,
    start: Instant,
    warmup: Duration,
    total: Duration,
) -> Result<(u64, u64)> {
    let mut n = 0u64;
    let mut first_measured = None;
    loop {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due.duration_since(start) >= total {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let measured = due.duration_since(start) >= warmup;
        if measured && first_measured.is_none() {
            first_measured = Some(n);
        }
        let body = payload(&run, n, measured, size);
        match &mut publisher {
            Publisher::Ws(ws) => ws
                .send(Message::text(body))
                .await
                .map_err(|e| anyhow::anyhow!("publishing over WebSocket failed: {e}"))?,
            Publisher::Http(post) => post
                .post(&body)
                .await
                .map_err(|e| anyhow::anyhow!("publishing over HTTP failed: {e}"))?,
        }
        metrics.gifts_created.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    match &mut publisher {
        Publisher::Ws(ws) => {
            // The stream's own close (sends a close frame). Through the Box,
            // `ws.close` could resolve to `SinkExt::close` when futures'
            // `alloc` feature is on, which takes no argument.
            let _ = tokio::time::timeout(Duration::from_secs(1), (**ws).close(None)).await;
        }
        Publisher::Http(post) => {
            // Give the last answers a moment, then stop reading.
            tokio::time::sleep(Duration::from_millis(200)).await;
            post.reader.abort();
        }
    }
    Ok((n, first_measured.unwrap_or(n)))
}

/// One subscriber: counts and times this run's messages, tracks their order.
#[allow(clippy::too_many_arguments)]
async fn subscriber(
    i: usize,
    url: String,
    m: Arc<Metrics>,
    pool: Arc<SourcePool>,
    mut stop: watch::Receiver<bool>,
    run: String,
    started: Arc<AtomicBool>,
    last_n: Arc<Vec<AtomicU64>>,
) -> Option<(usize, SeqTracker, bool)> {
    let t0 = Instant::now();
    let mut ws = match connect_ws(&url, &pool).await {
        Ok(ws) => ws,
        Err(e) => {
            m.connect_failed.fetch_add(1, Ordering::Relaxed);
            m.error(if e.to_string().contains("refused") {
                "connect_refused"
            } else {
                "connect_failed"
            });
            last_n[i].store(u64::MAX, Ordering::Relaxed);
            return None;
        }
    };
    Metrics::record(&m.connect, t0.elapsed());
    m.connected.fetch_add(1, Ordering::Relaxed);
    let throughout_candidate = !started.load(Ordering::SeqCst);
    let mut tracker = SeqTracker::default();
    let mut open = true;
    // One stop future for the whole loop: creating it per frame would
    // re-register a waker on the shared channel for every received frame.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let arrived = now_us();
                    // Messages of other runs (nchan replays the newest stored one) are skipped.
                    if str_field(&text, "\"r\"") != Some(run.as_str()) {
                        continue;
                    }
                    let Some(n) = u64_field(&text, "\"n\"") else { continue };
                    if !tracker.observe(n, None) {
                        continue;
                    }
                    last_n[i].fetch_max(n, Ordering::Relaxed);
                    m.delivered();
                    if u64_field(&text, "\"m\"") == Some(1) {
                        if let Some(ts) = u64_field(&text, "\"ts\"") {
                            m.screen.record(i, arrived.saturating_sub(ts));
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    m.error("ws_connection_lost");
                    open = false;
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    if open {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    } else {
        m.disconnected.fetch_add(1, Ordering::Relaxed);
        last_n[i].store(u64::MAX, Ordering::Relaxed);
    }
    Some((i, tracker, throughout_candidate && open))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_fields() {
        let p = payload("abc", 7, true, 200);
        assert_eq!(p.len(), 200);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["n"], 7);
        assert_eq!(u64_field(&p, "\"m\""), Some(1));
        assert_eq!(str_field(&p, "\"r\""), Some("abc"));
    }
}
