//! Concurrent duplicates and concurrent orders of one promoter.

use prorata::grpc::pb;
use prorata::grpc::pb::commission_service_client::CommissionServiceClient;
use prost::Message;

use crate::both_backends;
use crate::helpers::{connect, order, Backend, TestApp};

async fn two_hundred_concurrent_duplicates_store_one_result(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\nrules: [{id: all, levels: ['0.10', '0.05']}]\n")
        .await;
    app.promoter("P1", None).await;
    app.promoter("P2", Some("P1")).await;
    app.bind("C1", "P2").await;
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(connect(app.addr).await);
    }
    let o = order("O-RACE-1", "C1", "123.45");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = CommissionServiceClient::new(channels[i % 4].clone());
        let o = o.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .compute(pb::ComputeRequest { order: Some(o) })
                .await
                .expect("compute");
            let replayed = resp
                .metadata()
                .get("prorata-replayed")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (
                resp.into_inner().split.expect("split").encode_to_vec(),
                replayed,
            )
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let first = &answers[0].0;
    assert!(
        answers.iter().all(|(bytes, _)| bytes == first),
        "all 200 answers must be byte-identical"
    );
    let fresh = answers
        .iter()
        .filter(|(_, r)| r.as_deref() == Some("false"))
        .count();
    assert_eq!(fresh, 1, "exactly one call computed; the rest replayed");
    assert_eq!(app.count("splits").await, 1);
    // merchant, platform and two promoters.
    assert_eq!(app.count("split_accounts").await, 4);
    // The volume counters moved once: one merchant row and one promoter row.
    assert_eq!(app.count("volumes").await, 2);
    app.shutdown().await;
}
both_backends!(two_hundred_concurrent_duplicates_store_one_result);

async fn concurrent_orders_of_one_promoter_never_read_the_same_prior_volume(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    // 40 orders of 100.00: the first 1000.00 of the month earn 10 %, the rest 20 %. Only if
    // every order sees the volume of all orders stored before it do commissions add up to
    // exactly 1000 × 10 % + 3000 × 20 % = 700.00.
    app.publish(
        "rules:\n- id: volume\n  ladder: {metric: promoter_month_sales, mode: marginal, tiers: [{from: '0', rate: '0.10'}, {from: '1000', rate: '0.20'}]}\n",
    )
    .await;
    app.promoter("PV", None).await;
    app.bind("CV", "PV").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ch = connect(app.addr).await;
        tasks.push(tokio::spawn(async move {
            let mut c = CommissionServiceClient::new(ch);
            let o = order(&format!("O-VOL-{i}"), "CV", "100.00");
            let s = c
                .compute(pb::ComputeRequest { order: Some(o) })
                .await
                .expect("compute")
                .into_inner()
                .split
                .unwrap();
            s.totals
                .iter()
                .find(|t| t.account == "promoter:PV")
                .map_or(0, |t| t.amount_minor)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 70_000, "commission total in fen");
    app.shutdown().await;
}
both_backends!(concurrent_orders_of_one_promoter_never_read_the_same_prior_volume);
