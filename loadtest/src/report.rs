//! The run report: the summary table printed at the end, the JSON file and a
//! small hand-written SVG of latency percentiles and throughput per second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::metrics::{Percentiles, Sample};

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub mode: String,
    pub run_id: String,
    pub started_at: String,
    /// The resolved scenario, as text (for the record).
    pub scenario: BTreeMap<String, String>,
    /// Seconds of the measured window (after warm-up).
    pub measured_s: f64,
    pub gifts: GiftCounts,
    pub deliveries: Deliveries,
    pub viewers: ViewerCounts,
    pub latency: Latencies,
    pub errors: BTreeMap<String, u64>,
    pub server: Option<ServerStats>,
    /// The load generator's own CPU over the measured window (is the client the bottleneck?).
    pub client: Option<ServerStats>,
    pub timeline: Vec<Sample>,
    pub verification: Verification,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct GiftCounts {
    pub attempted: u64,
    pub created: u64,
    pub rejected: u64,
    pub unknown: u64,
    pub retries: u64,
    pub acks_sent: u64,
    /// Gifts created per second over the measured window.
    pub per_s: f64,
    /// Total bought, decimal string.
    pub amount: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Deliveries {
    pub total: u64,
    pub measured: u64,
    pub per_s: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ViewerCounts {
    pub target: u64,
    pub connected: u64,
    pub connect_failed: u64,
    pub disconnected: u64,
    pub source_addresses_used: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Latencies {
    pub gift_to_screen: Percentiles,
    pub purchase: Percentiles,
    pub ack_round_trip: Percentiles,
    pub connect: Percentiles,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerStats {
    pub pid: u32,
    pub cpu_s: f64,
    pub cpu_us_per_delivery: Option<f64>,
    pub cpu_us_per_gift: Option<f64>,
    pub rss_kib_end: u64,
    pub rss_kib_max: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Verification {
    pub performed: bool,
    pub ok: bool,
    pub viewers_checked: u64,
    pub gifts_checked: u64,
    pub problems_total: u64,
    pub problems_by_kind: BTreeMap<String, u64>,
    /// The first problems, described (at most [`PROBLEMS_LISTED_MAX`]).
    pub problems: Vec<String>,
}

/// Problems listed one by one in the report and on the terminal.
pub const PROBLEMS_LISTED_MAX: usize = 50;

fn row(out: &mut String, name: &str, p: &Percentiles) {
    if p.count == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<16} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
    );
}

impl Report {
    /// The human summary printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== applause-loadtest {} ({}) ==",
            self.mode, self.run_id
        );
        let g = &self.gifts;
        let fanout = self.mode == "fanout";
        if fanout {
            let _ = writeln!(
                out,
                "published  {} messages ({:.1}/s measured)",
                g.created, g.per_s
            );
        } else if g.attempted > 0 {
            let _ = writeln!(
                out,
                "gifts      attempted {}  created {}  rejected {}  unknown {}  retries {}  acks {}  ({:.1}/s, total {})",
                g.attempted, g.created, g.rejected, g.unknown, g.retries, g.acks_sent, g.per_s, g.amount
            );
        }
        let v = &self.viewers;
        if v.target > 0 {
            let _ = writeln!(
                out,
                "viewers    target {}  connected {}  failed {}  disconnected {}  source addresses {}",
                v.target, v.connected, v.connect_failed, v.disconnected, v.source_addresses_used
            );
        }
        let _ = writeln!(
            out,
            "deliveries {} total, {} measured, {:.0}/s over {:.1}s",
            self.deliveries.total, self.deliveries.measured, self.deliveries.per_s, self.measured_s
        );
        let _ = writeln!(
            out,
            "latency ms {:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let l = &self.latency;
        row(&mut out, "gift-to-screen", &l.gift_to_screen);
        row(&mut out, "purchase", &l.purchase);
        row(&mut out, "ack round trip", &l.ack_round_trip);
        row(&mut out, "connect", &l.connect);
        if let Some(s) = &self.server {
            let per = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.2} µs"));
            let _ = writeln!(
                out,
                "server     pid {}  cpu {:.2}s  per delivery {}  per gift {}  rss {} KiB (max {})",
                s.pid,
                s.cpu_s,
                per(s.cpu_us_per_delivery),
                per(s.cpu_us_per_gift),
                s.rss_kib_end,
                s.rss_kib_max
            );
        }
        if let Some(c) = &self.client {
            let _ = writeln!(
                out,
                "client     cpu {:.2}s  per delivery {}  rss {} KiB",
                c.cpu_s,
                c.cpu_us_per_delivery
                    .map_or("-".to_owned(), |v| format!("{v:.2} µs")),
                c.rss_kib_end
            );
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "errors     {}", list.join("  "));
        }
        let vr = &self.verification;
        if vr.performed {
            if vr.ok && fanout {
                let _ = writeln!(
                    out,
                    "verify     OK: {} messages × {} subscribers exactly once and in order",
                    vr.gifts_checked, vr.viewers_checked
                );
            } else if vr.ok && vr.viewers_checked == 0 {
                let _ = writeln!(
                    out,
                    "verify     OK: {} gifts; finance and leaderboards match",
                    vr.gifts_checked
                );
            } else if vr.ok {
                let _ = writeln!(
                    out,
                    "verify     OK: {} gifts × {} viewers exactly once and in order; finance and leaderboards match",
                    vr.gifts_checked, vr.viewers_checked
                );
            } else {
                let kinds: Vec<String> = vr
                    .problems_by_kind
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "verify     FAILED: {} problems ({})",
                    vr.problems_total,
                    kinds.join(", ")
                );
                for p in &vr.problems {
                    let _ = writeln!(out, "  - {p}");
                }
            }
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn write_svg(&self, path: &Path) -> Result<()> {
        std::fs::write(path, svg(&self.timeline, &self.mode))
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Two stacked panels: latency p50/p99/max per second (ms), and deliveries
/// and gifts per second.
pub fn svg(samples: &[Sample], title: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 560.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    let plot_w = W - LEFT - RIGHT;
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let x = |t: f64| LEFT + plot_w * t / t_max;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14">applause-loadtest {} — per second</text>"#,
        escape(title)
    );
    type Series<'a> = (&'a str, &'a str, Box<dyn Fn(&Sample) -> f64 + 'a>);
    let panels: [(f64, &str, Vec<Series<'_>>); 2] = [
        (
            30.0,
            "latency ms",
            vec![
                ("p50", "#1f77b4", Box::new(|s: &Sample| s.p50_ms)),
                ("p99", "#d62728", Box::new(|s: &Sample| s.p99_ms)),
                ("max", "#bbbbbb", Box::new(|s: &Sample| s.max_ms)),
            ],
        ),
        (
            300.0,
            "per second",
            vec![
                (
                    "deliveries/s",
                    "#2ca02c",
                    Box::new(|s: &Sample| s.deliveries as f64),
                ),
                ("gifts/s", "#9467bd", Box::new(|s: &Sample| s.gifts as f64)),
            ],
        ),
    ];
    let panel_h = 220.0;
    for (top, label, series) in &panels {
        let y_max = series
            .iter()
            .flat_map(|(_, _, f)| samples.iter().map(f))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let y = |v: f64| top + panel_h - panel_h * v / y_max;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#888"/>"##
        );
        for i in 0..=4 {
            let v = y_max * f64::from(i) / 4.0;
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text><line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
                LEFT - 5.0,
                y(v) + 4.0,
                short(v),
                LEFT + plot_w,
                y(v),
                y(v)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})">{label}</text>"#,
            top + panel_h / 2.0,
            top + panel_h / 2.0
        );
        for (i, (name, color, f)) in series.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .map(|s| format!("{:.1},{:.1}", x(s.t_s), y(f(s))))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
            let lx = LEFT + 10.0 + 110.0 * i as f64;
            let _ = writeln!(
                out,
                r#"<rect x="{lx}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
                top + 6.0,
                lx + 14.0,
                top + 15.0
            );
        }
    }
    for i in 0..=5 {
        let t = t_max * f64::from(i) / 5.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}s</text>"#,
            x(t),
            300.0 + panel_h + 16.0,
            t
        );
    }
    out.push_str("</svg>\n");
    out
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_well_formed_svg() {
        let samples: Vec<Sample> = (1u32..=5)
            .map(|i: u32| Sample {
                t_s: f64::from(i),
                gifts: 10,
                deliveries: 1000 * u64::from(i),
                p50_ms: 2.0,
                p99_ms: 9.0,
                max_ms: 12.0,
            })
            .collect();
        let s = svg(&samples, "run");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 5);
    }
}
