//! The `prorata` binary itself: reconcile and validate, as an operator runs them.

use std::process::Command;

use prorata::app::App;
use prorata::cache::CacheSettings;
use prorata::domain::lifecycle::RawRefund;
use prorata::domain::order::{RawAmount, RawLine, RawOrder};
use prorata::store::sqlite::SqliteStore;

fn prorata(db: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prorata"))
        .args(args)
        .env("PRORATA_SQLITE_PATH", db)
        .env_remove("PRORATA_DATABASE_URL")
        .env_remove("PRORATA_CONFIG")
        .output()
        .expect("run prorata");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_nothing_for_a_clean_book_and_each_difference_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("book.db");
    {
        let store = std::sync::Arc::new(SqliteStore::open(&db).await.unwrap());
        let app = App::new(store.clone(), &CacheSettings::default())
            .await
            .unwrap();
        app.publish_ruleset("platform: {rate: '0.05'}\n")
            .await
            .unwrap();
        for (i, price) in ["10.00", "25.50", "7.99"].iter().enumerate() {
            let raw = RawOrder {
                id: format!("O-{i}"),
                merchant: "M1".into(),
                buyer: "C1".into(),
                paid_at: Some(chrono::Utc::now()),
                currency: "CNY".into(),
                lines: vec![RawLine {
                    id: "L1".into(),
                    sku: "A".into(),
                    category: "x".into(),
                    quantity: 1,
                    unit_price: RawAmount::Decimal((*price).into()),
                    ..Default::default()
                }],
                ..Default::default()
            };
            app.compute(&raw).await.unwrap();
        }
        let refund = RawRefund {
            order_id: "O-1".into(),
            refund_id: "R-1".into(),
            lines: vec![],
            full: true,
        };
        app.refund(refund).await.unwrap();
        store.close().await;
    }
    let (code, out) = prorata(&db, &["reconcile"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("orders checked:   3") && out.contains("no discrepancies"),
        "{out}"
    );
    let csv = dir.path().join("orders.csv");
    std::fs::write(
        &csv,
        "order_id,amount_paid,amount_refunded\nO-0,10.00,0\nO-1,25.50,25.50\nO-2,7.99,0\n",
    )
    .unwrap();
    let (code, out) = prorata(&db, &["reconcile", "--orders", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    std::fs::write(&csv, "O-0,10.01,0\nO-1,25.50,0\nO-9,1.00,0\n").unwrap();
    let (code, out) = prorata(&db, &["reconcile", "--orders", csv.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("4 discrepancies"), "{out}");
    for want in [
        "mismatched",
        "O-0",
        "O-1",
        "missing",
        "O-9",
        "unknown",
        "O-2",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
}

#[test]
fn validate_prints_each_problem_with_its_path_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rules.yaml");
    std::fs::write(
        &f,
        "max_levels: 4\nrules:\n- id: a\n  levels: ['0.1', '2']\n",
    )
    .unwrap();
    let (code, out) = prorata(
        &dir.path().join("unused.db"),
        &["validate", f.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: rules[0].levels[1]: rate 2 is outside [0, 1]"),
        "{out}"
    );
    assert!(out.contains("warning: max_levels"), "{out}");
}

/// `prorata bench --scenario replay` against a live server: it stores its orders, then
/// replays them from bytes encoded once, and every replay succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_replays_its_stored_orders_without_a_failure() {
    let Some(app) = crate::helpers::TestApp::spawn(crate::helpers::Backend::Sqlite).await else {
        return;
    };
    let addr = format!("http://{}", app.addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_prorata"))
        .args([
            "bench",
            "--addr",
            &addr,
            "--scenario",
            "replay",
            "--setup",
            "--replay-orders",
            "20",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--concurrency",
            "4",
            "--connections",
            "2",
        ])
        .output()
        .await
        .expect("run prorata bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ok calls:"))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let ok: u64 = line["ok calls: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ok > 0, "{line}");
    assert!(line.contains("failed: 0;"), "{line}");
    assert_eq!(
        app.count("splits").await,
        20,
        "only the 20 set-up orders are stored"
    );
    app.shutdown().await;
}
