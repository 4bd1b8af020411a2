//! The gateway's limits: every bound on connections, queues, frames and history,
//! with defaults, validated before any port is bound.

use std::time::Duration;

/// Every bound the gateway keeps. Build one with [`GatewayConfig::default`] and
/// override fields; [`GatewayConfig::validate`] names the first bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Bytes of frames queued for one connection (plus the batch being written)
    /// before it is closed with 4008 `slow_consumer`.
    pub outbound_queue_bytes_max: usize,
    /// The largest frame a client may send (close 1009 past it).
    pub inbound_frame_bytes_max: usize,
    /// Malformed client frames tolerated; the next one closes with 1008.
    pub malformed_frames_max: u32,
    /// Events kept per room for resume.
    pub history_events_max: usize,
    /// Age of the oldest event kept per room for resume.
    pub history_age_ms_max: u64,
    /// How often the server pings a connection.
    pub ping_interval_ms: u64,
    /// A peer silent (no frame, no pong) for this long is closed.
    pub idle_timeout_ms: u64,
    /// WebSocket connections held at once by this gateway (503 past it).
    pub connections_max: usize,
    /// New connections per second from one IP address; 0 disables the limit.
    pub connects_per_ip_per_s: u32,
    /// Connections one IP address may open in a burst above its rate.
    pub connects_per_ip_burst: u32,
    /// The WebSocket read buffer of each connection. Inbound frames are small
    /// (a 4 KiB frame is read in several chunks), and at 50,000 connections
    /// every KiB here is 50 MB.
    pub read_buffer_bytes: usize,
    /// Not used any more: frames go from the connection's queue to the socket
    /// without an intermediate buffer (see `vectored_write`). Still validated.
    pub write_buffer_bytes: usize,
    /// How long a writer waits after its first queued frame before writing,
    /// to gather more frames into the same write (fewer syscalls per
    /// delivery, at that much added latency). 0 writes at once; under load
    /// batches form anyway while writers wait for the CPU.
    pub write_coalesce_ms: u64,
    /// How long a closing connection gets to flush its close frame.
    pub close_grace_ms: u64,
    /// How long [`crate::Gateway::shutdown`] waits for connections to close.
    pub shutdown_grace_ms: u64,
    /// How long a room without connections stays subscribed (its history stays
    /// warm for viewers who reconnect and resume).
    pub room_linger_ms: u64,
    /// How long live events are held after a connection's welcome, waiting
    /// for an immediate `resume`: a reconnecting client then gets the replay
    /// first and every event once, in order. Its first other frame ends the
    /// hold early. 0 turns the hold off.
    pub resume_grace_ms: u64,
    /// Browser origins (`scheme://host[:port]`, as the `Origin` header
    /// carries them) that may open a WebSocket; a handshake from any other
    /// origin is a 403 before the upgrade. Empty (the default) allows every
    /// origin: Applause authenticates only with bearer tokens (the
    /// `Authorization` header or `access_token`), never cookies, so a foreign
    /// page gets nothing a viewer's browser holds (no cross-site WebSocket
    /// hijacking). A deployment that puts cookie authentication in front sets
    /// the list. A handshake without `Origin` (not a browser) is allowed.
    pub allowed_origins: Vec<String>,
    /// Write a frame straight to the socket from the fan-out (a
    /// non-blocking write) while the connection has nothing queued; only
    /// what the socket does not take waits for the connection's writer task.
    /// Off, every frame goes through the writer task (benchmark comparisons).
    /// Ignored while `write_coalesce_ms` > 0.
    pub direct_write: bool,
    /// The writer task drains its queue with vectored writes (up to 64
    /// frames per syscall). Off, it writes one frame per syscall
    /// (benchmark comparisons).
    pub vectored_write: bool,
    /// Bus messages the fan-out takes at once when they have queued up;
    /// consecutive events of one room among them go to each connection in
    /// one write. 1 fans out event by event (benchmark comparisons).
    pub fanout_batch_events_max: usize,
    /// The longest a busy room's events are held to gather more of them
    /// before writing (each connection then gets them in one write): the
    /// adaptive window (see the dispatcher; each room its own, the other
    /// rooms never wait for it). It holds only as long as the room needs,
    /// at its recent rate, for `fanout_coalesce_events` events, and only
    /// when the fan-out is not behind. 0 turns it off; it never applies
    /// below `fanout_coalesce_rate_min`.
    pub fanout_coalesce_ms: u64,
    /// Events per second from which a room counts as busy for
    /// `fanout_coalesce_ms` (0: every room).
    pub fanout_coalesce_rate_min: u32,
    /// Events of the room a hold aims for; the window ends early when it
    /// has them.
    pub fanout_coalesce_events: usize,
    /// Deliveries per second (a room's events a second times its
    /// connections) from which a room below the busy rate counts as heavy:
    /// its events are held for the room's next event when that is due
    /// within `fanout_heavy_coalesce_ms`, so each connection gets the
    /// pair in one write — half the sends, for up to one gap between events
    /// of latency. 0: no room is heavy.
    pub fanout_heavy_deliveries_min: u32,
    /// The longest a heavy room's event is held for its next; 0
    /// turns the heavy window off. Rooms whose events come further apart
    /// never wait.
    pub fanout_heavy_coalesce_ms: u64,
    /// A heavy room's pairs are staggered: each event goes at once to half
    /// the room (with the event that half lacked) while the other half gets
    /// it with the next — the same two frames per write, half the wait
    /// behind the room's other writes, no wait for the second of a pair.
    /// Off: the whole room waits for the pair.
    pub fanout_heavy_stagger: bool,
    /// Run the fan-out (the bus dispatcher) on a thread of its own (driven
    /// with the caller's runtime handle, so its sockets, timer and whatever
    /// it spawns stay with that runtime), instead of as a task among the
    /// process's others. A round of a big room is one long poll (5,000
    /// writes take 20–40 ms); on its own thread the kernel's scheduler
    /// interleaves it with the HTTP handlers and the ledger's committer
    /// instead of their tasks waiting behind it in the runtime's queues.
    /// Off: a task on the caller's runtime (benchmark comparisons).
    pub fanout_thread: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            outbound_queue_bytes_max: 256 * 1024,
            inbound_frame_bytes_max: 4 * 1024,
            malformed_frames_max: 5,
            history_events_max: 1_000,
            history_age_ms_max: 5 * 60 * 1_000,
            ping_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            connections_max: 100_000,
            connects_per_ip_per_s: 2_000,
            connects_per_ip_burst: 2_000,
            read_buffer_bytes: 512,
            write_buffer_bytes: 16 * 1024,
            write_coalesce_ms: 0,
            close_grace_ms: 2_000,
            shutdown_grace_ms: 5_000,
            room_linger_ms: 30_000,
            resume_grace_ms: 300,
            allowed_origins: Vec::new(),
            direct_write: true,
            vectored_write: true,
            fanout_batch_events_max: 64,
            // On: only rooms of 100 events/s and more wait, at most 25 ms
            // per round, for up to 8 events (docs/benchmarks.md, "adaptive
            // window", "the fan-out's own thread" and "fourth pass": at
            // 1,000 viewers × 200 events/s, 20 ms / 6 cost 2.4 µs per
            // delivery at p99 33 ms, 25 ms / 8 1.9 µs at p99 39 ms).
            fanout_coalesce_ms: 25,
            fanout_coalesce_events: 8,
            fanout_coalesce_rate_min: 100,
            // On: a room costing 10,000 deliveries a second (a tenth of a
            // core here) pairs its events when they come at most 60 ms
            // apart (docs/benchmarks.md, "fourth pass").
            fanout_heavy_deliveries_min: 10_000,
            fanout_heavy_coalesce_ms: 60,
            fanout_heavy_stagger: true,
            fanout_thread: true,
        }
    }
}

impl GatewayConfig {
    /// Checks every bound; the error names the field and its bad value.
    pub fn validate(&self) -> Result<(), String> {
        fn at_least(name: &str, value: u64, min: u64) -> Result<(), String> {
            if value < min {
                return Err(format!(
                    "gateway {name} = {value} is too small (at least {min})"
                ));
            }
            Ok(())
        }
        fn at_most(name: &str, value: u64, max: u64) -> Result<(), String> {
            if value > max {
                return Err(format!(
                    "gateway {name} = {value} is too large (at most {max})"
                ));
            }
            Ok(())
        }
        let u = |v: usize| v as u64;
        at_least(
            "inbound_frame_bytes_max",
            u(self.inbound_frame_bytes_max),
            256,
        )?;
        at_most(
            "inbound_frame_bytes_max",
            u(self.inbound_frame_bytes_max),
            1 << 20,
        )?;
        // A resume replays up to the whole history through the queue, so the
        // queue must at least hold one large frame.
        at_least(
            "outbound_queue_bytes_max",
            u(self.outbound_queue_bytes_max),
            16 * 1024,
        )?;
        at_least(
            "malformed_frames_max",
            u64::from(self.malformed_frames_max),
            1,
        )?;
        at_least("history_events_max", u(self.history_events_max), 1)?;
        at_most("history_events_max", u(self.history_events_max), 1_000_000)?;
        at_least("history_age_ms_max", self.history_age_ms_max, 1_000)?;
        at_least("ping_interval_ms", self.ping_interval_ms, 100)?;
        if self.idle_timeout_ms <= self.ping_interval_ms {
            return Err(format!(
                "gateway idle_timeout_ms = {} must exceed ping_interval_ms = {}",
                self.idle_timeout_ms, self.ping_interval_ms
            ));
        }
        at_least("connections_max", u(self.connections_max), 1)?;
        if self.connects_per_ip_per_s > 0 {
            at_least(
                "connects_per_ip_burst",
                u64::from(self.connects_per_ip_burst),
                1,
            )?;
        }
        at_least("read_buffer_bytes", u(self.read_buffer_bytes), 256)?;
        at_most("read_buffer_bytes", u(self.read_buffer_bytes), 1 << 20)?;
        at_least("write_buffer_bytes", u(self.write_buffer_bytes), 1)?;
        at_most("write_buffer_bytes", u(self.write_buffer_bytes), 1 << 20)?;
        at_most("write_coalesce_ms", self.write_coalesce_ms, 1_000)?;
        at_most("resume_grace_ms", self.resume_grace_ms, 10_000)?;
        at_least(
            "fanout_batch_events_max",
            u(self.fanout_batch_events_max),
            1,
        )?;
        // An outbox writes at most 64 frames per vectored write.
        at_most(
            "fanout_batch_events_max",
            u(self.fanout_batch_events_max),
            64,
        )?;
        // Bounded: the window is latency every event of a busy room pays.
        at_most("fanout_coalesce_ms", self.fanout_coalesce_ms, 50)?;
        at_least("fanout_coalesce_events", u(self.fanout_coalesce_events), 2)?;
        at_most("fanout_coalesce_events", u(self.fanout_coalesce_events), 64)?;
        // Bounded like the busy window: a heavy room's events pay it.
        at_most(
            "fanout_heavy_coalesce_ms",
            self.fanout_heavy_coalesce_ms,
            100,
        )?;
        at_least("close_grace_ms", self.close_grace_ms, 1)?;
        at_least("shutdown_grace_ms", self.shutdown_grace_ms, 1)?;
        for origin in &self.allowed_origins {
            if !is_origin(origin) {
                return Err(format!(
                    "gateway allowed origin {origin:?} must be scheme://host[:port] \
                     (http or https, no path), such as https://example.com"
                ));
            }
        }
        Ok(())
    }

    /// Whether a handshake's `Origin` header passes [`Self::allowed_origins`].
    pub(crate) fn origin_allowed(&self, origin: Option<&axum::http::HeaderValue>) -> bool {
        match origin {
            _ if self.allowed_origins.is_empty() => true,
            None => true,
            Some(v) => v.to_str().is_ok_and(|o| {
                self.allowed_origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(o))
            }),
        }
    }

    pub(crate) fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub(crate) fn close_grace(&self) -> Duration {
        Duration::from_millis(self.close_grace_ms)
    }

    pub(crate) fn write_coalesce(&self) -> Duration {
        Duration::from_millis(self.write_coalesce_ms)
    }

    pub(crate) fn write_mode(&self) -> crate::outbox::WriteMode {
        crate::outbox::WriteMode {
            direct: self.direct_write && self.write_coalesce_ms == 0,
            vectored: self.vectored_write,
        }
    }

    pub(crate) fn history_age(&self) -> Duration {
        Duration::from_millis(self.history_age_ms_max)
    }

    pub(crate) fn resume_grace(&self) -> Duration {
        Duration::from_millis(self.resume_grace_ms)
    }

    pub(crate) fn room_linger(&self) -> Duration {
        Duration::from_millis(self.room_linger_ms)
    }
}

/// `http(s)://host[:port]`: what a browser sends as `Origin`.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_against_the_list() {
        let any = GatewayConfig::default();
        let h = |s: &'static str| axum::http::HeaderValue::from_static(s);
        assert!(any.origin_allowed(Some(&h("https://evil.example"))));
        assert!(any.origin_allowed(None));
        let listed = GatewayConfig {
            allowed_origins: vec!["https://app.example".into(), "http://localhost:8080".into()],
            ..GatewayConfig::default()
        };
        assert_eq!(listed.validate(), Ok(()));
        assert!(listed.origin_allowed(Some(&h("https://app.example"))));
        assert!(listed.origin_allowed(Some(&h("HTTPS://APP.EXAMPLE"))));
        assert!(listed.origin_allowed(Some(&h("http://localhost:8080"))));
        assert!(listed.origin_allowed(None));
        for bad in [
            "https://evil.example",
            "null",
            "https://app.example.evil",
            "http://app.example",
        ] {
            assert!(!listed.origin_allowed(Some(&h(bad))), "{bad}");
        }
        check(
            |c| c.allowed_origins = vec!["app.example".into()],
            Some("allowed origin"),
        );
        check(
            |c| c.allowed_origins = vec!["https://a.example/path".into()],
            Some("allowed origin"),
        );
    }

    fn check(edit: impl FnOnce(&mut GatewayConfig), expected_field: Option<&str>) {
        let mut c = GatewayConfig::default();
        edit(&mut c);
        match (c.validate(), expected_field) {
            (Ok(()), None) => {}
            (Err(e), Some(field)) => assert!(e.contains(field), "{e} should name {field}"),
            (r, f) => panic!("validate() = {r:?}, expected error naming {f:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        check(|_| {}, None);
        check(
            |c| c.inbound_frame_bytes_max = 10,
            Some("inbound_frame_bytes_max"),
        );
        check(
            |c| c.outbound_queue_bytes_max = 0,
            Some("outbound_queue_bytes_max"),
        );
        check(|c| c.history_events_max = 0, Some("history_events_max"));
        check(|c| c.malformed_frames_max = 0, Some("malformed_frames_max"));
        check(
            |c| c.idle_timeout_ms = c.ping_interval_ms,
            Some("idle_timeout_ms"),
        );
        check(|c| c.connections_max = 0, Some("connections_max"));
        check(|c| c.read_buffer_bytes = 1, Some("read_buffer_bytes"));
        check(
            |c| {
                c.connects_per_ip_per_s = 0;
                c.connects_per_ip_burst = 0;
            },
            None,
        );
    }
}
