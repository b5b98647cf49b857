//! PostgreSQL month partitions: results, shares, entries and events land in the month
//! they belong to, a month can be detached for archiving, and an order of a detached
//! month is refused rather than computed again.

use chrono::{Datelike, Months, Utc};
use prorata::grpc::pb;
use tonic::Code;

use crate::helpers::{order, ts, Backend, TestApp};

/// `YYYY_MM` of the month `back` months before now (UTC), and an RFC 3339 time in it.
fn month(back: u32) -> (String, String) {
    let t = Utc::now()
        .with_day(1)
        .unwrap()
        .checked_sub_months(Months::new(back))
        .unwrap();
    (
        format!("{:04}_{:02}", t.year(), t.month()),
        format!("{:04}-{:02}-02T10:00:00Z", t.year(), t.month()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_land_in_their_month_and_a_detached_month_is_refused_not_recomputed() {
    let Some(mut app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    let (this_month, paid_now) = month(0);
    let (last_month, paid_last) = month(1);
    let mut orders = Vec::new();
    for (id, paid_at) in [
        ("O-now", paid_now.as_str()),
        ("O-last", paid_last.as_str()),
        // Long before the prepared months: stored in the DEFAULT partition, not refused.
        ("O-2019", "2019-03-04T10:00:00Z"),
    ] {
        let mut o = order(id, "C1", "10.00");
        o.paid_at = ts(paid_at);
        orders.push(o.clone());
        app.commission
            .compute(pb::ComputeRequest { order: Some(o) })
            .await
            .expect("compute");
    }
    let part = |table: &str, order: &str| {
        format!("SELECT tableoid::regclass::text FROM {table} WHERE order_id = '{order}' LIMIT 1")
    };
    assert_eq!(
        app.text(&part("splits", "O-now")).await.unwrap(),
        format!("splits_{this_month}")
    );
    assert_eq!(
        app.text(&part("split_accounts", "O-last")).await.unwrap(),
        format!("split_accounts_{last_month}")
    );
    assert_eq!(
        app.text(&part("splits", "O-2019")).await.unwrap(),
        "splits_default"
    );
    // Entries and events are partitioned by when they were written: all now.
    assert_eq!(
        app.text(&part("entries", "O-2019")).await.unwrap(),
        format!("entries_{this_month}")
    );
    assert_eq!(
        app.text("SELECT tableoid::regclass::text FROM outbox WHERE key = 'O-last'")
            .await
            .unwrap(),
        format!("outbox_{this_month}")
    );
    // The server prepares months on start; doing it again makes none.
    assert_eq!(app.store.prepare_months(Utc::now()).await.unwrap(), 0);

    // Archive last month: its results leave the live table.
    app.execute(&format!(
        "ALTER TABLE splits DETACH PARTITION splits_{last_month}"
    ))
    .await
    .expect("detach");
    let e = app.get_split("O-last").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // A retry of the archived order is refused, never computed a second time.
    let e = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(orders[1].clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(app.count("split_keys").await, 3);
    assert_eq!(app.count("splits").await, 2);
    // The other months still replay.
    let again = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(orders[0].clone()),
        })
        .await
        .expect("replay");
    assert_eq!(again.metadata().get("prorata-replayed").unwrap(), "true");
    app.shutdown().await;
}
