//! The verifier catches what it claims to catch: the real load generator runs
//! against a faulty in-test server, one fault at a time, and must fail with the
//! matching problem; against the same server without faults it must pass.

mod common;

use applause_loadtest::{execute, Cli};
use clap::Parser;
use common::{start, Fault, SECRET};

/// The start of an `applause-loadtest run` command line against `base`.
fn run_args(base: &str) -> Vec<&str> {
    vec![
        "applause-loadtest",
        "run",
        "--target",
        base,
        "--jwt-secret",
        SECRET,
    ]
}

/// Runs `applause-loadtest run` against a server with `fault`; returns the
/// problem kinds and whether the run passed.
async fn run_against(fault: Fault, extra: &[&str]) -> (Vec<String>, bool) {
    let base = start(fault).await;
    let mut args = run_args(&base);
    args.extend_from_slice(&[
        "--rooms",
        "1",
        "--viewers",
        "4",
        "--senders",
        "3",
        "--rate",
        "30",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--drain",
        "1s",
        "--ack-share",
        "0.2",
        "--stickers",
        "rose:5,heart:2,rocket:1",
        "--quiet",
    ]);
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).expect("valid command line");
    let (outcome, _) = execute(cli).await.expect("the run completes");
    let mut kinds: Vec<String> = outcome
        .problems
        .iter()
        .map(|p| p.kind().to_owned())
        .collect();
    kinds.dedup();
    assert_eq!(outcome.report.verification.ok, outcome.problems.is_empty());
    (kinds, outcome.ok())
}

fn assert_caught(kinds: &[String], ok: bool, expected: &str) {
    assert!(!ok, "the run must fail when the server shows {expected}");
    assert!(
        kinds.iter().any(|k| k == expected),
        "expected a {expected} problem, got {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_verifies_clean() {
    let base = start(Fault::None).await;
    let cli = Cli::try_parse_from([
        "applause-loadtest",
        "run",
        "--target",
        &base,
        "--jwt-secret",
        SECRET,
        "--rooms",
        "2",
        "--viewers",
        "5",
        "--senders",
        "4",
        "--rate",
        "40",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--drain",
        "2s",
        "--ack-share",
        "0.3",
        "--message-share",
        "0.5",
        "--quiet",
    ])
    .unwrap();
    let (outcome, _) = execute(cli).await.unwrap();
    assert!(outcome.ok(), "{:?}", outcome.problems);
    let r = &outcome.report;
    assert!(r.gifts.created >= 40, "{:?}", r.gifts);
    assert_eq!(r.viewers.connected, 10);
    assert_eq!(r.verification.viewers_checked, 10);
    // Each gift reached the five viewers of its room.
    assert_eq!(r.deliveries.total, r.gifts.created * 5);
    assert!(r.latency.gift_to_screen.count > 0);
    assert!(r.latency.ack_round_trip.count > 0);
    let json = serde_json::to_value(r).unwrap();
    assert!(json["latency"]["gift_to_screen"]["p99_ms"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_frame_is_reported_as_lost() {
    let (kinds, ok) = run_against(Fault::DropFrame, &[]).await;
    assert_caught(&kinds, ok, "lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_frame_is_reported() {
    let (kinds, ok) = run_against(Fault::DuplicateFrame, &[]).await;
    assert_caught(&kinds, ok, "duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_frames_are_reported() {
    let (kinds, ok) = run_against(Fault::ReorderFrames, &[]).await;
    assert_caught(&kinds, ok, "reordered");
    assert!(
        !kinds.iter().any(|k| k == "lost"),
        "a late frame is not lost: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_finance_total_is_reported() {
    let (kinds, ok) = run_against(Fault::FinanceTotal, &[]).await;
    assert_caught(&kinds, ok, "finance_mismatch");
}

/// Several load generators on one deployment: the summary's growth includes
/// the others' purchases, so it is only trusted alone; the revenue report of
/// each run's own broadcasters stays exact either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generators_check_finance_by_their_own_broadcasters() {
    let base = start(Fault::None).await;
    let run = |shared: bool| {
        let base = base.clone();
        async move {
            let mut args = run_args(&base);
            args.extend_from_slice(&[
                "--viewers",
                "2",
                "--senders",
                "2",
                "--rate",
                "40",
                "--duration",
                "1500ms",
                "--warmup",
                "0s",
                "--drain",
                "500ms",
                "--quiet",
            ]);
            if shared {
                args.push("--shared-deployment");
            }
            let cli = Cli::try_parse_from(args).expect("valid command line");
            execute(cli).await.expect("the run completes").0
        }
    };
    let (a, b) = tokio::join!(run(true), run(true));
    assert!(a.ok() && b.ok(), "{:?} {:?}", a.problems, b.problems);
    let (a, b) = tokio::join!(run(false), run(false));
    let kinds: Vec<&str> = a
        .problems
        .iter()
        .chain(&b.problems)
        .map(|p| p.kind())
        .collect();
    assert!(
        kinds.contains(&"finance_mismatch"),
        "the global summary grew by both runs' purchases: {kinds:?}"
    );
    // A wrong revenue row is caught with --shared-deployment too.
    let (kinds, ok) = run_against(Fault::FinanceTotal, &["--shared-deployment"]).await;
    assert_caught(&kinds, ok, "finance_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_leaderboard_entry_is_reported() {
    let (kinds, ok) = run_against(Fault::LeaderboardEntry, &[]).await;
    assert_caught(&kinds, ok, "leaderboard_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purchase_benchmark_checks_finance_too() {
    let base = start(Fault::FinanceTotal).await;
    let cli = Cli::try_parse_from([
        "applause-loadtest",
        "purchase",
        "--target",
        &base,
        "--jwt-secret",
        SECRET,
        "--senders",
        "4",
        "--concurrency",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--quiet",
    ])
    .unwrap();
    let (outcome, _) = execute(cli).await.unwrap();
    assert!(outcome.report.gifts.created > 0);
    assert!(outcome.report.latency.purchase.count > 0);
    assert!(!outcome.ok());
    assert!(outcome
        .problems
        .iter()
        .all(|p| p.kind() == "finance_mismatch"));
}

/// The binary itself: exit status 1 on a fault, 0 when clean, and the JSON
/// report and SVG plot written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_on_a_fault_and_writes_reports() {
    let dir = std::env::temp_dir().join(format!("applause-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (fault, expected_code) in [(Fault::DropFrame, 1), (Fault::None, 0)] {
        let base = start(fault).await;
        let json = dir.join(format!("{fault:?}.json"));
        let svg = dir.join(format!("{fault:?}.svg"));
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_applause-loadtest"))
            .args(["run", "--target", &base, "--rooms", "1", "--viewers", "3"])
            .args([
                "--senders",
                "2",
                "--rate",
                "20",
                "--duration",
                "1s",
                "--warmup",
                "0s",
            ])
            .args(["--drain", "1s", "--quiet", "--json"])
            .arg(&json)
            .arg("--plot")
            .arg(&svg)
            .env("APPLAUSE_JWT_SECRET", SECRET)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(expected_code),
            "{fault:?}: {stdout}"
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["verification"]["ok"], expected_code == 0);
        assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
        if expected_code == 1 {
            assert!(
                stdout.contains("FAILED") && stdout.contains("never received"),
                "{stdout}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
