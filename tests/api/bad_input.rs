//! Bad input never panics and never writes: every malformed order of the vectors plus
//! many more, each checked for its status code, its field path, and an untouched store.

use prorata::grpc::{pb, wire};
use tokio_stream::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Code;

use crate::both_backends;
use crate::helpers::{dec, minor, order, ts, Backend, TestApp};

type Mutate = Box<dyn Fn(&mut pb::Order)>;

fn line_with(f: impl Fn(&mut pb::OrderLine) + 'static) -> Mutate {
    Box::new(move |o: &mut pb::Order| f(&mut o.lines[0]))
}

/// (what, mutation, expected field path at the start of the message)
fn malformed_orders() -> Vec<(&'static str, Mutate, &'static str)> {
    vec![
        (
            "empty id",
            Box::new(|o: &mut pb::Order| o.id.clear()),
            "order.id",
        ),
        (
            "id of 129 characters",
            Box::new(|o: &mut pb::Order| o.id = "x".repeat(129)),
            "order.id",
        ),
        (
            "id with a space",
            Box::new(|o: &mut pb::Order| o.id = "O 1".into()),
            "order.id",
        ),
        (
            "id with a slash",
            Box::new(|o: &mut pb::Order| o.id = "O/1".into()),
            "order.id",
        ),
        (
            "id with unicode",
            Box::new(|o: &mut pb::Order| o.id = "订单1".into()),
            "order.id",
        ),
        (
            "missing merchant",
            Box::new(|o: &mut pb::Order| o.merchant.clear()),
            "order.merchant",
        ),
        (
            "buyer with a quote",
            Box::new(|o: &mut pb::Order| o.buyer = "C'1".into()),
            "order.buyer",
        ),
        (
            "missing paid_at",
            Box::new(|o: &mut pb::Order| o.paid_at = None),
            "order.paid_at",
        ),
        (
            "paid_at with bad nanos",
            Box::new(|o: &mut pb::Order| {
                o.paid_at = Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                })
            }),
            "order.paid_at",
        ),
        (
            "missing currency",
            Box::new(|o: &mut pb::Order| o.currency.clear()),
            "order.currency",
        ),
        (
            "unknown currency",
            Box::new(|o: &mut pb::Order| o.currency = "XXQ".into()),
            "order.currency",
        ),
        (
            "gold is not a currency",
            Box::new(|o: &mut pb::Order| o.currency = "XAU".into()),
            "order.currency",
        ),
        (
            "channel with bad characters",
            Box::new(|o: &mut pb::Order| o.channel = "ali pay".into()),
            "order.channel",
        ),
        (
            "no lines",
            Box::new(|o: &mut pb::Order| o.lines.clear()),
            "order.lines",
        ),
        (
            "1001 lines",
            Box::new(|o: &mut pb::Order| {
                let l = o.lines[0].clone();
                o.lines = (0..1001)
                    .map(|i| pb::OrderLine {
                        id: format!("L{i}"),
                        ..l.clone()
                    })
                    .collect();
            }),
            "order.lines",
        ),
        (
            "quantity 0",
            line_with(|l| l.quantity = 0),
            "order.lines[0].quantity",
        ),
        (
            "negative quantity",
            line_with(|l| l.quantity = -3),
            "order.lines[0].quantity",
        ),
        (
            "quantity above the limit",
            line_with(|l| l.quantity = 1_000_001),
            "order.lines[0].quantity",
        ),
        (
            "missing unit_price",
            line_with(|l| l.unit_price = None),
            "order.lines[0].unit_price",
        ),
        (
            "negative unit_price",
            line_with(|l| l.unit_price = minor(-1)),
            "order.lines[0].unit_price",
        ),
        (
            "unit_price of i64::MAX",
            line_with(|l| l.unit_price = minor(i64::MAX)),
            "order.lines[0].unit_price",
        ),
        (
            "unit_price with a fraction of a fen",
            line_with(|l| l.unit_price = dec("10.001")),
            "order.lines[0].unit_price",
        ),
        (
            "unit_price that is not a number",
            line_with(|l| l.unit_price = dec("ten")),
            "order.lines[0].unit_price",
        ),
        (
            "unit_price in exponent form",
            line_with(|l| l.unit_price = dec("1e3")),
            "order.lines[0].unit_price",
        ),
        (
            "quantity × unit_price overflows",
            line_with(|l| {
                l.quantity = 1_000_000;
                l.unit_price = minor(999_999_999_999_999);
            }),
            "order.lines[0].unit_price",
        ),
        (
            "discount above gross",
            line_with(|l| l.discount = dec("10.01")),
            "order.lines[0].discount",
        ),
        (
            "negative discount",
            line_with(|l| l.discount = minor(-5)),
            "order.lines[0].discount",
        ),
        (
            "coupon without a funder",
            line_with(|l| {
                l.coupon = Some(pb::Coupon {
                    amount: dec("1.00"),
                    funded_by: 0,
                })
            }),
            "order.lines[0].coupon.funded_by",
        ),
        (
            "coupon with an unknown funder",
            line_with(|l| {
                l.coupon = Some(pb::Coupon {
                    amount: dec("1.00"),
                    funded_by: 9,
                })
            }),
            "order.lines[0].coupon.funded_by",
        ),
        (
            "a card with one use",
            line_with(|l| l.uses = 1),
            "order.lines[0].uses",
        ),
        (
            "empty sku",
            line_with(|l| l.sku.clear()),
            "order.lines[0].sku",
        ),
        (
            "category with a control character",
            line_with(|l| l.category = "a\u{7}b".into()),
            "order.lines[0].category",
        ),
        (
            "line id shipping is reserved",
            line_with(|l| l.id = "shipping".into()),
            "order.lines[0].id",
        ),
        (
            "duplicate line id",
            Box::new(|o: &mut pb::Order| {
                let l = o.lines[0].clone();
                o.lines.push(l);
            }),
            "order.lines[1].id",
        ),
        (
            "negative shipping",
            Box::new(|o: &mut pb::Order| o.shipping = minor(-100)),
            "order.shipping",
        ),
        (
            "referral without a time",
            Box::new(|o: &mut pb::Order| {
                o.referrals = vec![pb::Referral {
                    promoter: "P1".into(),
                    at: None,
                }]
            }),
            "order.referrals[0].at",
        ),
        (
            "referral to a bad id",
            Box::new(|o: &mut pb::Order| {
                o.referrals = vec![pb::Referral {
                    promoter: "".into(),
                    at: ts("2026-11-01T09:00:00Z"),
                }]
            }),
            "order.referrals[0].promoter",
        ),
        (
            "33 tags",
            Box::new(|o: &mut pb::Order| o.tags = (0..33).map(|i| format!("t{i}")).collect()),
            "order.tags",
        ),
        (
            "a profit base needs unit_cost",
            Box::new(|o: &mut pb::Order| o.merchant = "M-PROFIT".into()),
            "order.lines[0].unit_cost",
        ),
    ]
}

async fn assert_nothing_stored(app: &TestApp) {
    for table in ["splits", "split_accounts", "volumes", "buyers"] {
        assert_eq!(app.count(table).await, 0, "{table} must stay empty");
    }
}

async fn malformed_orders_are_refused_with_their_field_path_and_store_nothing(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\nrules: [{id: all, levels: ['0.10']}]\n")
        .await;
    app.publish(
        "canary: {merchants: [M-PROFIT]}\nbase: profit\nrules: [{id: all, levels: ['0.10']}]\n",
    )
    .await;
    app.promoter("P1", None).await;
    app.bind("C1", "P1").await;
    let cases = malformed_orders();
    assert!(cases.len() >= 30);
    for (what, mutate, path) in &cases {
        let mut o = order("O-BAD-1", "C1", "10.00");
        mutate(&mut o);
        let err = app
            .commission
            .compute(pb::ComputeRequest {
                order: Some(o.clone()),
            })
            .await
            .expect_err(what);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{what}: {}",
            err.message()
        );
        assert!(
            err.message().starts_with(&format!("{path}:")),
            "{what}: message {:?} should start with {path}",
            err.message()
        );
        // Preview refuses it the same way.
        let perr = app
            .commission
            .preview(pb::PreviewRequest {
                order: Some(o),
                ruleset_document: String::new(),
            })
            .await;
        assert_eq!(
            perr.expect_err(what).code(),
            Code::InvalidArgument,
            "{what} (preview)"
        );
    }
    let err = app
        .commission
        .compute(pb::ComputeRequest { order: None })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "order: is required")
    );
    assert_nothing_stored(&app).await;
    // The id is still free for a valid order.
    let ok = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-BAD-1", "C1", "10.00")),
        })
        .await;
    assert!(ok.is_ok());
    app.shutdown().await;
}
both_backends!(malformed_orders_are_refused_with_their_field_path_and_store_nothing);

async fn every_malformed_order_of_the_vectors_is_refused_and_stores_nothing(backend: Backend) {
    use serde_yaml_ng::Value;
    let files = prorata::vectors::collect_files(&["tests/vectors".into()]).unwrap();
    let mut seen = 0;
    for f in files {
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let bad: Vec<Value> = doc["steps"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter(|s| {
                s.get("pay").is_some()
                    && s["expect"].get("error").and_then(Value::as_str) == Some("INVALID_ARGUMENT")
            })
            .map(|s| s["pay"].clone())
            .collect();
        if bad.is_empty() {
            continue;
        }
        let Some(mut app) = TestApp::spawn(backend).await else {
            return;
        };
        let rs = doc.get("ruleset").cloned().unwrap_or(Value::Null);
        app.publish(&serde_yaml_ng::to_string(&rs).unwrap()).await;
        for pay in bad {
            seen += 1;
            let err = app
                .commission
                .compute(pb::ComputeRequest {
                    order: Some(prorata::vectors::order(&pay)),
                })
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{}: {}",
                f.display(),
                err.message()
            );
            assert!(
                err.message().starts_with("order."),
                "{}: no field path in {:?}",
                f.display(),
                err.message()
            );
        }
        assert_nothing_stored(&app).await;
        app.shutdown().await;
    }
    assert!(
        seen >= 7,
        "expected the vectors' malformed orders, saw {seen}"
    );
}
both_backends!(every_malformed_order_of_the_vectors_is_refused_and_stores_nothing);

async fn bad_rule_sets_and_network_changes_are_refused_and_change_nothing(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.promoter("P1", None).await;
    app.promoter("P2", Some("P1")).await;
    app.promoter("P3", Some("P2")).await;
    let cases = [
        ("rules:\n- id: a\n  levls: ['0.1']\n", "document.rules[0]"),
        (
            "rules:\n- id: a\n  levels: ['0.1', '1.5']\n",
            "document.rules[0].levels[1]",
        ),
        ("platform: {rate: 0.1}\n", "document.platform.rate"),
        ("max_levels: 11\n", "document.max_levels"),
        (
            "rules: [{id: a, levels: ['0.1']}, {id: a, levels: ['0.1']}]\n",
            "document.rules[1].id",
        ),
        ("effective_from: yesterday\n", "document.effective_from"),
        ("[1, 2]\n", "document"),
    ];
    for (doc, path) in cases {
        let err = app
            .rules
            .publish_rule_set(pb::PublishRuleSetRequest {
                document: doc.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{doc}");
        assert!(
            err.message().starts_with(path),
            "{doc}: {:?} should start with {path}",
            err.message()
        );
    }
    assert_eq!(app.count("rulesets").await, 0);
    // A cycle, an unknown parent, a bad id, a binding to nobody.
    let up = |id: &str, parent: &str| pb::UpsertPromoterRequest {
        id: id.into(),
        parent: Some(parent.into()),
        ..Default::default()
    };
    let e = app
        .network
        .upsert_promoter(up("P1", "P3"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let e = app
        .network
        .upsert_promoter(up("P1", "P1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let e = app
        .network
        .upsert_promoter(up("P9", "GHOST"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = app
        .network
        .upsert_promoter(up("P 9", "P1"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message().starts_with("id:")),
        (Code::InvalidArgument, true),
        "{}",
        e.message()
    );
    let e = app
        .network
        .upsert_promoter(pb::UpsertPromoterRequest {
            id: "P8".into(),
            status: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message().starts_with("status:")),
        (Code::InvalidArgument, true)
    );
    let e = app
        .network
        .bind_customer(pb::BindCustomerRequest {
            customer: "C1".into(),
            promoter: "NOBODY".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(app.count("promoters").await, 3);
    assert_eq!(app.count("bindings").await, 0);
    let up = app
        .network
        .get_upline(pb::GetUplineRequest {
            promoter: "P1".into(),
            max_depth: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.promoters.len(), 1, "P1 is still a root");
    // Listing and reading with bad arguments.
    let e = app
        .commission
        .list_splits(pb::ListSplitsRequest {
            account: "bank:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("account:"), "{}", e.message());
    let e = app
        .commission
        .list_splits(pb::ListSplitsRequest {
            account: "platform".into(),
            page_token: "zzz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("page_token:"), "{}", e.message());
    let e = app
        .network
        .get_upline(pb::GetUplineRequest {
            promoter: "P1".into(),
            max_depth: 65,
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("max_depth:"), "{}", e.message());
    let e = app.get_split("no such/order").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.shutdown().await;
}
both_backends!(bad_rule_sets_and_network_changes_are_refused_and_change_nothing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_refused() {
    let Some(mut app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let doc = format!("# {}\n", "x".repeat(5 * 1024 * 1024));
    let e = app
        .rules
        .validate_rule_set(pb::ValidateRuleSetRequest { document: doc })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{:?}",
        e
    );
    app.shutdown().await;
}

/// Sends `bytes` as the whole request message of a Compute call, whatever they are.
async fn compute_bytes(
    app: &TestApp,
    bytes: &'static [u8],
) -> Result<pb::ComputeResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<wire::ComputeRequest, pb::ComputeResponse>::default();
    grpc.unary(
        tonic::Request::new(wire::ComputeRequest::from_bytes(bytes.into())),
        PathAndQuery::from_static("/prorata.v1.CommissionService/Compute"),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn bytes_that_are_not_a_compute_request_are_invalid_and_a_stream_goes_on(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    // order: a length of 5 with 1 byte after it; a key with no value; a bad wire type.
    for bytes in [&[0x0a, 0x05, 0x0a][..], &[0x0a], &[0x0f, 0x01]] {
        let e = compute_bytes(&app, bytes).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "{bytes:?}: {}",
            e.message()
        );
        assert!(
            e.message()
                .starts_with("request: is not a ComputeRequest message"),
            "{bytes:?}: {}",
            e.message()
        );
    }
    // No bytes at all decode to a request without an order.
    let e = compute_bytes(&app, &[]).await.unwrap_err();
    assert!(e.message().starts_with("order:"), "{}", e.message());
    assert_nothing_stored(&app).await;

    // In a stream, a message that does not decode gets its own answer; the rest go on.
    let good = |id: &str| {
        wire::ComputeRequest::from_bytes(
            prost::Message::encode_to_vec(&pb::ComputeRequest {
                order: Some(order(id, "C1", "10.00")),
            })
            .into(),
        )
    };
    let msgs = vec![
        good("O-S1"),
        wire::ComputeRequest::from_bytes(bytes::Bytes::from_static(&[0x0a, 0x05, 0x0a])),
        good("O-S2"),
    ];
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<wire::ComputeRequest, pb::ComputeStreamResponse>::default();
    let answers: Vec<_> = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(msgs)),
            PathAndQuery::from_static("/prorata.v1.CommissionService/ComputeStream"),
            codec,
        )
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let codes: Vec<_> = answers
        .iter()
        .map(|a| (a.order_id.as_str(), a.code))
        .collect();
    assert_eq!(
        codes,
        [("O-S1", 0), ("", Code::InvalidArgument as i32), ("O-S2", 0)]
    );
    assert!(answers[1]
        .message
        .starts_with("request: is not a ComputeRequest message"));
    assert_eq!(app.count("splits").await, 2);
    app.shutdown().await;
}
both_backends!(bytes_that_are_not_a_compute_request_are_invalid_and_a_stream_goes_on);
