//! API behaviours beyond the vectors: replay, preview, listing, validation, the network
//! service, health, reflection, immutability at the database.

use prorata::grpc::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::both_backends;
use crate::helpers::{dec, minor, order, totals, ts, Backend, TestApp};

async fn a_replay_is_byte_identical_and_the_minor_form_is_the_same_order(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    let first = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-1", "C1", "50.00")),
        })
        .await
        .unwrap();
    assert_eq!(first.metadata().get("prorata-replayed").unwrap(), "false");
    let first = first.into_inner().split.unwrap();
    // Rules change; the stored result does not.
    app.publish("platform: {rate: '0.20'}\n").await;
    let mut same = order("O-1", "C1", "50.00");
    same.lines[0].unit_price = minor(5000);
    let again = app
        .commission
        .compute(pb::ComputeRequest { order: Some(same) })
        .await
        .unwrap();
    assert_eq!(again.metadata().get("prorata-replayed").unwrap(), "true");
    assert_eq!(again.into_inner().split.unwrap(), first);
    let read = app.get_split("O-1").await.unwrap().split.unwrap();
    assert_eq!(read, first);
    // Now answered from the result cache with the bytes encoded for the first replay.
    for _ in 0..2 {
        let cached = app
            .commission
            .compute(pb::ComputeRequest {
                order: Some(order("O-1", "C1", "50.00")),
            })
            .await
            .unwrap();
        assert_eq!(cached.metadata().get("prorata-replayed").unwrap(), "true");
        assert_eq!(cached.into_inner().split.unwrap(), first);
    }
    let e = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-1", "C1", "50.01")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = app.get_split("O-404").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The database itself refuses to change a stored result.
    assert!(app.execute("UPDATE splits SET paid = 0").await.is_err());
    assert!(app.execute("DELETE FROM split_accounts").await.is_err());
    assert_eq!(app.count("splits").await, 1);
    app.shutdown().await;
}
both_backends!(a_replay_is_byte_identical_and_the_minor_form_is_the_same_order);

async fn an_order_without_a_rule_set_in_effect_is_a_failed_precondition(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let e = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-1", "C1", "1.00")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    app.publish("effective_from: 2027-01-01T00:00:00Z\n").await;
    let e = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-1", "C1", "1.00")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(app.count("splits").await, 0);
    app.shutdown().await;
}
both_backends!(an_order_without_a_rule_set_in_effect_is_a_failed_precondition);

async fn preview_computes_against_a_draft_and_stores_nothing(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    app.promoter("P1", None).await;
    app.bind("C1", "P1").await;
    let o = order("O-P", "C1", "100.00");
    let p = app
        .commission
        .preview(pb::PreviewRequest {
            order: Some(o.clone()),
            ruleset_document: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(totals(&p.into_inner().split.unwrap())["platform"], "10.00");
    let draft = "platform: {rate: '0.02'}\nrules: [{id: all, levels: ['0.6']}]\n";
    let p = app
        .commission
        .preview(pb::PreviewRequest {
            order: Some(o.clone()),
            ruleset_document: draft.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let t = totals(p.split.as_ref().unwrap());
    assert_eq!(
        (t["platform"].as_str(), t["promoter:P1"].as_str()),
        ("2.00", "60.00")
    );
    assert_eq!(p.split.unwrap().ruleset_version, 0);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.path == "ruleset_document.rules[0]"),
        "{:?}",
        p.warnings
    );
    let e = app
        .commission
        .preview(pb::PreviewRequest {
            order: Some(o),
            ruleset_document: "cap: '2'\n".into(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with("ruleset_document.cap:"),
        "{}",
        e.message()
    );
    assert_eq!(app.count("splits").await, 0);
    assert_eq!(app.count("volumes").await, 0);
    app.shutdown().await;
}
both_backends!(preview_computes_against_a_draft_and_stores_nothing);

async fn list_splits_pages_newest_first_without_gaps(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("rules: [{id: all, levels: ['0.10']}]\n").await;
    app.promoter("P1", None).await;
    app.bind("C1", "P1").await;
    for i in 0..7 {
        let mut o = order(&format!("O-{i}"), "C1", "10.00");
        o.paid_at = ts(&format!("2026-11-0{}T10:00:00Z", 1 + i % 3));
        app.commission
            .compute(pb::ComputeRequest { order: Some(o) })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .commission
            .list_splits(pb::ListSplitsRequest {
                account: "promoter:P1".into(),
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.splits.len() <= 3);
        seen.extend(page.splits.iter().map(|s| {
            (
                s.paid_at.unwrap().seconds,
                s.order_id.clone(),
                s.amount.clone(),
            )
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 7);
    assert!(
        seen.windows(2)
            .all(|w| (w[0].0, &w[0].1) > (w[1].0, &w[1].1)),
        "newest first: {seen:?}"
    );
    assert!(seen.iter().all(|s| s.2 == "1.00"));
    let ranged = app
        .commission
        .list_splits(pb::ListSplitsRequest {
            account: "merchant:M1".into(),
            from: ts("2026-11-02T00:00:00Z"),
            to: ts("2026-11-03T00:00:00Z"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ranged.splits.len(),
        2,
        "orders 1 and 4 were paid on the 2nd"
    );
    app.shutdown().await;
}
both_backends!(list_splits_pages_newest_first_without_gaps);

async fn rule_sets_validate_publish_and_list_by_version(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let v = app
        .rules
        .validate_rule_set(pb::ValidateRuleSetRequest {
            document: "max_levels: 4\nrules: [{id: a, levels: ['0.5', '0.1']}]\n".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    let paths: Vec<&str> = v.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(
        paths.contains(&"max_levels") && paths.contains(&"rules[0]"),
        "{paths:?}"
    );
    let v = app
        .rules
        .validate_rule_set(pb::ValidateRuleSetRequest {
            document: "hold_days: -1\n".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !v.valid && v.errors[0].path == "hold_days",
        "{:?}",
        v.errors
    );
    for i in 0..5 {
        let r = app
            .publish(&format!(
                "effective_from: 2026-11-0{}T00:00:00Z\nplatform: {{rate: '0.0{i}'}}\n",
                i + 1
            ))
            .await;
        assert_eq!(r.ruleset.unwrap().version, i + 1);
    }
    app.publish("effective_from: 2026-11-02T12:00:00Z\ncanary: {merchants: [M7]}\n")
        .await;
    let page = app
        .rules
        .list_rule_sets(pb::ListRuleSetsRequest {
            page_size: 4,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.rulesets.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![6, 5, 4, 3]
    );
    let rest = app
        .rules
        .list_rule_sets(pb::ListRuleSetsRequest {
            page_size: 4,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.rulesets.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert!(rest.next_page_token.is_empty());
    let at = |m: &str, t: &str| pb::GetRuleSetRequest {
        version: 0,
        at: ts(t),
        merchant: m.into(),
    };
    let g = app
        .rules
        .get_rule_set(at("M1", "2026-11-02T13:00:00Z"))
        .await
        .unwrap()
        .into_inner()
        .ruleset
        .unwrap();
    assert_eq!(g.version, 2);
    let g = app
        .rules
        .get_rule_set(at("M7", "2026-11-02T13:00:00Z"))
        .await
        .unwrap()
        .into_inner()
        .ruleset
        .unwrap();
    assert_eq!((g.version, g.canary_merchants), (6, vec!["M7".to_string()]));
    let e = app
        .rules
        .get_rule_set(pb::GetRuleSetRequest {
            version: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    app.shutdown().await;
}
both_backends!(rule_sets_validate_publish_and_list_by_version);

async fn the_network_service_moves_promoters_and_serves_uplines(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("rules: [{id: all, levels: ['0.10', '0.05']}]\n")
        .await;
    // A bulk import of a 300-deep chain and 50 bindings, in one stream.
    let mut items = vec![];
    for i in 0..300 {
        let parent = (i > 0).then(|| format!("N{}", i - 1));
        items.push(pb::ImportNetworkRequest {
            item: Some(pb::import_network_request::Item::Promoter(
                pb::UpsertPromoterRequest {
                    id: format!("N{i}"),
                    parent,
                    ..Default::default()
                },
            )),
        });
    }
    for c in 0..50 {
        items.push(pb::ImportNetworkRequest {
            item: Some(pb::import_network_request::Item::Binding(
                pb::BindCustomerRequest {
                    customer: format!("K{c}"),
                    promoter: "N299".into(),
                },
            )),
        });
    }
    let r = app
        .network
        .import_network(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.promoters, r.bindings), (300, 50));
    let up = app
        .network
        .get_upline(pb::GetUplineRequest {
            promoter: "N299".into(),
            max_depth: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.promoters.len(), 11);
    assert!(up.truncated);
    assert_eq!(up.promoters[3].id, "N296");
    // An import with one bad item applies nothing.
    let bad = vec![
        pb::ImportNetworkRequest {
            item: Some(pb::import_network_request::Item::Promoter(
                pb::UpsertPromoterRequest {
                    id: "X1".into(),
                    ..Default::default()
                },
            )),
        },
        pb::ImportNetworkRequest {
            item: Some(pb::import_network_request::Item::Promoter(
                pb::UpsertPromoterRequest {
                    id: "X2".into(),
                    parent: Some("GHOST".into()),
                    ..Default::default()
                },
            )),
        },
    ];
    let e = app
        .network
        .import_network(tokio_stream::iter(bad))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().starts_with("items[1]"), "{}", e.message());
    assert_eq!(app.count("promoters").await, 300);
    // A move is visible to the next Compute (cache invalidated).
    let o = |id: &str| order(id, "K1", "100.00");
    let s = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(o("O-M1")),
        })
        .await
        .unwrap()
        .into_inner()
        .split
        .unwrap();
    assert_eq!(totals(&s)["promoter:N298"], "5.00");
    app.promoter("N299", Some("N0")).await;
    let s = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(o("O-M2")),
        })
        .await
        .unwrap()
        .into_inner()
        .split
        .unwrap();
    assert_eq!(totals(&s)["promoter:N0"], "5.00");
    assert!(!totals(&s).contains_key("promoter:N298"));
    // Freezing: the frozen promoter's level-1 share stays with the merchant.
    app.network
        .upsert_promoter(pb::UpsertPromoterRequest {
            id: "N299".into(),
            status: pb::PromoterStatus::Frozen as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let s = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(o("O-M3")),
        })
        .await
        .unwrap()
        .into_inner()
        .split
        .unwrap();
    assert_eq!(totals(&s)["merchant:M1"], "95.00");
    assert!(
        s.notes.iter().any(|n| n.contains("frozen promoter N299")),
        "{:?}",
        s.notes
    );
    // Clearing a parent makes a root.
    let r = app
        .network
        .upsert_promoter(pb::UpsertPromoterRequest {
            id: "N5".into(),
            parent: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.promoter.unwrap().parent, r.created),
        (String::new(), false)
    );
    app.shutdown().await;
}
both_backends!(the_network_service_moves_promoters_and_serves_uplines);

async fn explanations_say_why_each_share_is_what_it_is(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("cap: '0.30'\nplatform: {rate: '0.05', partners: [{id: ops, share: '0.2'}]}\nrules: [{id: gen, levels: ['0.20', '0.10', '0.05']}]\n").await;
    app.promoter("P1", None).await;
    app.promoter("P2", Some("P1")).await;
    app.promoter("P3", Some("P2")).await;
    app.bind("C1", "P3").await;
    let mut o = order("O-X", "C1", "70.00");
    o.shipping = dec("8.00");
    let s = app
        .commission
        .compute(pb::ComputeRequest { order: Some(o) })
        .await
        .unwrap()
        .into_inner()
        .split
        .unwrap();
    let l1 = &s.lines[0];
    assert_eq!(
        l1.shares.iter().map(|x| x.amount_minor).sum::<i64>(),
        l1.paid_minor
    );
    let p3 = l1
        .shares
        .iter()
        .find(|x| x.account == "promoter:P3")
        .unwrap();
    let e = &p3.explanations[0];
    assert_eq!(
        (
            e.rule_id.as_str(),
            e.level,
            e.capped,
            e.rate.as_str(),
            e.weight.as_str()
        ),
        ("gen", 1, true, "0.2", "1")
    );
    assert_eq!(s.lines.last().unwrap().line_id, "shipping");
    assert_eq!(s.paid_minor, 7800);
    assert_eq!(
        s.chain
            .iter()
            .map(|c| c.promoter.as_str())
            .collect::<Vec<_>>(),
        ["P3", "P2", "P1"]
    );
    let accounts: Vec<&str> = s.totals.iter().map(|t| t.account.as_str()).collect();
    assert_eq!(
        accounts,
        [
            "merchant:M1",
            "platform",
            "partner:ops",
            "promoter:P3",
            "promoter:P2",
            "promoter:P1"
        ]
    );
    app.shutdown().await;
}
both_backends!(explanations_say_why_each_share_is_what_it_is);

/// A batch whose WAL cannot be synced (here the WAL file is gone from its directory) is
/// not answered as stored: the call is UNAVAILABLE, so is every later read or write, and
/// health says NOT_SERVING, so that the service is restarted instead of serving what may
/// not be on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_sync_is_unavailable_and_not_serving() {
    let Some(mut app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    let compute = |id: &str| pb::ComputeRequest {
        order: Some(order(id, "C1", "50.00")),
    };
    app.commission.compute(compute("O-1")).await.unwrap();
    let mut wal = app.sqlite_path().unwrap().into_os_string();
    wal.push("-wal");
    std::fs::remove_file(&wal).unwrap();
    let e = app.commission.compute(compute("O-2")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("WAL"), "{}", e.message());
    let e = app.get_split("O-1").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "a read is refused too: {e:?}");
    let e = app.commission.compute(compute("O-3")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "and a later write: {e:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let mut status = None;
    for _ in 0..40 {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        status = Some(r.status);
        if r.status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        Some(tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "prorata.v1.CommissionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(app.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in [
        "prorata.v1.CommissionService",
        "prorata.v1.RuleService",
        "prorata.v1.NetworkService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} missing from {names:?}");
    }
    app.shutdown().await;
}

async fn compute_stream_answers_in_order_and_fails_only_the_bad_orders(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    let mut reqs: Vec<pb::ComputeRequest> = (0..60)
        .map(|i| pb::ComputeRequest {
            order: Some(order(&format!("O-S{i}"), "C1", "10.00")),
        })
        .collect();
    reqs[10].order.as_mut().unwrap().lines[0].quantity = 0; // bad
    reqs[20] = reqs[5].clone(); // a duplicate: replayed
    reqs[30].order.as_mut().unwrap().id = "O-S6".into(); // an id taken earlier in the stream, other content
    reqs[30].order.as_mut().unwrap().lines[0].unit_price = dec("11.00");
    let answers: Vec<pb::ComputeStreamResponse> = app
        .commission
        .compute_stream(tokio_stream::iter(reqs.clone()))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(answers.len(), 60);
    for (i, (a, r)) in answers.iter().zip(&reqs).enumerate() {
        assert_eq!(
            a.order_id,
            r.order.as_ref().unwrap().id,
            "answer {i} out of order"
        );
    }
    assert_eq!(answers[10].code, Code::InvalidArgument as i32);
    assert!(
        answers[10].message.starts_with("order.lines[0].quantity"),
        "{}",
        answers[10].message
    );
    // 5 and 20 are in flight together: either may be the one that computes.
    assert!(answers[20].replayed != answers[5].replayed && answers[20].split == answers[5].split);
    // 6 and 30 share an id with different content: whichever commits first wins.
    let conflicts = [&answers[6], &answers[30]]
        .iter()
        .filter(|a| a.code == Code::AlreadyExists as i32)
        .count();
    assert_eq!(conflicts, 1);
    assert_eq!(answers.iter().filter(|a| a.code == 0).count(), 58);
    assert_eq!(app.count("splits").await, 57);
    app.shutdown().await;
}
both_backends!(compute_stream_answers_in_order_and_fails_only_the_bad_orders);

async fn only_the_bytes_of_a_checked_replay_are_answered_without_decoding(backend: Backend) {
    use prorata::app::App;
    use prorata::cache::CacheSettings;
    use prost::Message;

    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.publish("platform: {rate: '0.10'}\n").await;
    let core = App::new(app.store.clone(), &CacheSettings::default())
        .await
        .unwrap();
    let o = order("O-1", "C1", "50.00");
    let bytes = pb::ComputeRequest {
        order: Some(o.clone()),
    }
    .encode_to_vec();
    let raw = prorata::grpc::convert::raw_order(&o).unwrap();
    let fresh = core.compute(&raw).await.unwrap();
    assert!(!fresh.replayed);
    // A fresh result is not kept: its request was never compared with a stored one.
    App::remember_request(&fresh, &bytes);
    assert!(core.replay_identical("O-1", &bytes).await.is_none());
    let again = core.compute(&raw).await.unwrap();
    assert!(again.replayed);
    App::remember_request(&again, &bytes);
    let fast = core.replay_identical("O-1", &bytes).await.unwrap();
    assert!(fast.replayed);
    assert!(std::sync::Arc::ptr_eq(&fast.split, &again.split));
    assert_eq!(fast.split.result.paid, 5000);
    // The same order in other bytes (the minor form) is not identical: it takes the whole
    // path, where it is still a replay.
    let mut same = o.clone();
    same.lines[0].unit_price = minor(5000);
    let other = pb::ComputeRequest {
        order: Some(same.clone()),
    }
    .encode_to_vec();
    assert_ne!(other, bytes);
    assert!(core.replay_identical("O-1", &other).await.is_none());
    let slow = core
        .compute(&prorata::grpc::convert::raw_order(&same).unwrap())
        .await
        .unwrap();
    assert!(slow.replayed);
    // Only the first checked bytes are kept.
    App::remember_request(&slow, &other);
    assert!(core.replay_identical("O-1", &other).await.is_none());
    assert!(core.replay_identical("O-1", &bytes).await.is_some());
    // The bytes are looked up under their order id only.
    assert!(core.replay_identical("O-2", &bytes).await.is_none());

    // Over gRPC: the third identical request is answered from its bytes, the same answer;
    // a different order under the same id is still refused.
    let req = || pb::ComputeRequest {
        order: Some(order("O-9", "C1", "12.34")),
    };
    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = app.commission.compute(req()).await.unwrap();
        answers.push((
            r.metadata()
                .get("prorata-replayed")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
            r.into_inner().split.unwrap(),
        ));
    }
    assert_eq!(
        answers.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["false", "true", "true"]
    );
    assert!(answers.iter().all(|a| a.1 == answers[0].1));
    let e = app
        .commission
        .compute(pb::ComputeRequest {
            order: Some(order("O-9", "C1", "12.35")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(app.count("splits").await, 2);
    app.shutdown().await;
}
both_backends!(only_the_bytes_of_a_checked_replay_are_answered_without_decoding);
