//! One test suite for every Store backend (IOx catalog style): the same assertions run
//! against SQLite and PostgreSQL through the trait.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use prorata::cache::{CacheSettings, Caches};
use prorata::domain::engine::EngineError;
use prorata::domain::engine::{self, Context, Inputs};
use prorata::domain::network::{NetworkSnapshot, Status};
use prorata::domain::order::{Order, RawAmount, RawLine, RawOrder};
use prorata::domain::{fingerprint, ruleset};
use prorata::store::{
    CommitOutcome, ImportItem, NewRuleSet, PendingSplit, PromoterUpsert, SplitPlan, Store,
    StoreError,
};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

fn raw(id: &str, buyer: &str, minor: i64, day: u32) -> RawOrder {
    RawOrder {
        id: id.into(),
        merchant: "M1".into(),
        buyer: buyer.into(),
        paid_at: Some(Utc.with_ymd_and_hms(2026, 11, day, 10, 0, 0).unwrap()),
        currency: "CNY".into(),
        lines: vec![RawLine {
            id: "L1".into(),
            sku: "A".into(),
            category: "x".into(),
            quantity: 1,
            unit_price: RawAmount::Minor(minor),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A valid 1-line order of merchant M1 paid on 3 November 2026.
fn order(id: &str, buyer: &str, minor: i64) -> Order {
    Order::parse(&raw(id, buyer, minor, 3), "order").unwrap()
}

/// Stores one order on its own (no group commit); returns the outcome and the context
/// the engine was called with (the default when it was not called: a replay).
async fn commit(
    store: &Arc<dyn Store>,
    o: &Order,
    promoter: Option<&str>,
) -> (CommitOutcome, Context) {
    let seen: Seen = Default::default();
    let p = pending(o, promoter, &seen, false);
    let out = store.commit_split(&p.plan, &*p.compute).await.unwrap();
    let ctx = seen
        .lock()
        .unwrap()
        .last()
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    (out, ctx)
}

async fn store_rulesets_are_numbered_in_order_and_immutable(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    for i in 0..3u64 {
        let v = s
            .publish_ruleset(NewRuleSet {
                effective_from: (i > 0).then(|| {
                    Utc.with_ymd_and_hms(2026, 11, 1 + i as u32, 0, 0, 0)
                        .unwrap()
                }),
                canary: (i == 2).then(|| vec!["M7".to_string()]),
                document: format!("# v{i}\n"),
                sha256: "x".into(),
                published_at: Utc::now(),
            })
            .await
            .unwrap();
        assert_eq!(v.version, i + 1);
    }
    let all = s.all_rulesets().await.unwrap();
    assert_eq!(all.iter().map(|r| r.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[2].canary, Some(vec!["M7".to_string()]));
    assert_eq!(all[0].effective_from, None);
    assert_eq!(
        s.list_rulesets(Some(3), 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(s.get_ruleset(2).await.unwrap().unwrap().document, "# v1\n");
    assert!(s.get_ruleset(9).await.unwrap().is_none());
    assert!(app
        .execute("UPDATE rulesets SET document = 'x'")
        .await
        .is_err());
    app.shutdown().await;
}
both_backends!(store_rulesets_are_numbered_in_order_and_immutable);

async fn store_upserts_merge_fields_and_refuse_cycles(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    let now = Utc::now();
    let up = |id: &str, parent: Option<Option<&str>>| PromoterUpsert {
        id: id.into(),
        parent: parent.map(|p| p.map(Into::into)),
        ..Default::default()
    };
    assert!(
        s.upsert_promoter(up("A", None), None, now)
            .await
            .unwrap()
            .created
    );
    s.upsert_promoter(up("B", Some(Some("A"))), None, now)
        .await
        .unwrap();
    s.upsert_promoter(up("C", Some(Some("B"))), None, now)
        .await
        .unwrap();
    let graded = PromoterUpsert {
        id: "C".into(),
        grade: Some(Some("gold".into())),
        status: Some(Status::Frozen),
        ..Default::default()
    };
    let out = s.upsert_promoter(graded, None, now).await.unwrap();
    assert!(!out.created);
    assert_eq!(
        out.promoter.parent.as_deref(),
        Some("B"),
        "an absent parent is kept"
    );
    let c = s.get_upline("C", 0).await.unwrap().pop().unwrap();
    assert_eq!(
        (c.grade.as_deref(), c.status),
        (Some("gold"), Status::Frozen)
    );
    assert!(matches!(
        s.upsert_promoter(up("A", Some(Some("C"))), None, now).await,
        Err(StoreError::FailedPrecondition(_))
    ));
    assert!(matches!(
        s.upsert_promoter(up("D", Some(Some("Z"))), None, now).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.bind_customer("K", "Z", now).await,
        Err(StoreError::NotFound(_))
    ));
    s.bind_customer("K", "B", now).await.unwrap();
    s.bind_customer("K", "C", now).await.unwrap();
    assert_eq!(
        s.get_binding("K").await.unwrap().as_deref(),
        Some("C"),
        "a later binding replaces an earlier one"
    );
    // Grades of the rule set in effect: two direct invites make silver.
    let rs = Arc::new(
        ruleset::compile("grades: [{id: silver, upgrade: {direct_invites: 2}}]\n")
            .ruleset
            .unwrap(),
    );
    let out = s
        .upsert_promoter(up("E", Some(Some("A"))), Some(rs), now)
        .await
        .unwrap();
    assert_eq!(out.changed, ["E", "A"]);
    assert_eq!(
        s.get_upline("A", 0)
            .await
            .unwrap()
            .pop()
            .unwrap()
            .grade
            .as_deref(),
        Some("silver")
    );
    // An import is all or nothing.
    let items = vec![
        ImportItem::Promoter(up("F", None)),
        ImportItem::Binding {
            customer: "K2".into(),
            promoter: "NOPE".into(),
        },
    ];
    let e = s.import_network(items, None, now).await.unwrap_err();
    assert_eq!(e.index, 1);
    assert!(s.get_upline("F", 0).await.unwrap().is_empty());
    app.shutdown().await;
}
both_backends!(store_upserts_merge_fields_and_refuse_cycles);

async fn store_reads_an_upline_in_one_query_and_the_cache_keeps_its_ancestors(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    let now = Utc::now();
    // A <- B <- C <- D <- E, with a grade and a status to decode on the way.
    for (id, parent) in [
        ("A", None),
        ("B", Some("A")),
        ("C", Some("B")),
        ("D", Some("C")),
    ]
    .into_iter()
    .chain([("E", Some("D"))])
    {
        let u = PromoterUpsert {
            id: id.into(),
            parent: Some(parent.map(Into::into)),
            grade: (id == "C").then(|| Some("gold".into())),
            status: (id == "B").then_some(Status::Frozen),
        };
        s.upsert_promoter(u, None, now).await.unwrap();
    }
    let ids = |v: Vec<prorata::domain::network::PromoterNode>| {
        v.into_iter().map(|n| n.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.get_upline("E", 16).await.unwrap()),
        ["E", "D", "C", "B", "A"]
    );
    assert_eq!(ids(s.get_upline("E", 2).await.unwrap()), ["E", "D", "C"]);
    assert_eq!(ids(s.get_upline("E", 0).await.unwrap()), ["E"]);
    assert_eq!(ids(s.get_upline("C", 16).await.unwrap()), ["C", "B", "A"]);
    assert!(s.get_upline("NOPE", 16).await.unwrap().is_empty());
    let up = s.get_upline("D", 16).await.unwrap();
    assert_eq!(up[1].grade.as_deref(), Some("gold"));
    assert_eq!(
        (up[2].status, up[2].parent.as_deref()),
        (Status::Frozen, Some("A"))
    );
    assert_eq!(up[3].parent, None);

    // Loading E through a cold cache brings its ancestors along: after the rows change
    // in the store behind the cache's back (no invalidation), the ancestors still read as they were
    // loaded, so they came with E's one query and were not read again.
    let caches = Caches::new(s.clone(), &CacheSettings::default()).unwrap();
    assert_eq!(
        caches
            .promoter("E")
            .await
            .unwrap()
            .unwrap()
            .parent
            .as_deref(),
        Some("D")
    );
    for id in ["D", "C", "B", "A"] {
        let u = PromoterUpsert {
            id: id.into(),
            grade: Some(Some("changed".into())),
            ..Default::default()
        };
        s.upsert_promoter(u, None, now).await.unwrap();
    }
    for id in ["D", "C", "B", "A"] {
        let n = caches.promoter(id).await.unwrap().unwrap();
        assert_ne!(n.grade.as_deref(), Some("changed"), "{id} was read again");
    }
    assert_eq!(
        caches
            .promoter("C")
            .await
            .unwrap()
            .unwrap()
            .grade
            .as_deref(),
        Some("gold")
    );
    assert!(caches.promoter("NOPE").await.unwrap().is_none());
    app.shutdown().await;
}
both_backends!(store_reads_an_upline_in_one_query_and_the_cache_keeps_its_ancestors);

async fn store_commits_once_and_moves_counters_with_the_result(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    let o1 = Order::parse(&raw("O-1", "B1", 10_000, 3), "order").unwrap();
    let (out, ctx) = commit(s, &o1, Some("P")).await;
    assert!(matches!(out, CommitOutcome::Stored { .. }));
    assert_eq!(
        ctx,
        Context {
            first_order: true,
            promoter_month_prior: 0,
            merchant_month_prior: 0
        }
    );
    let (again, _) = commit(s, &o1, Some("P")).await;
    let CommitOutcome::Existing(stored) = again else {
        panic!("a second commit must find the first")
    };
    assert_eq!(stored.result.order_id, "O-1");
    let o2 = Order::parse(&raw("O-2", "B1", 5_000, 4), "order").unwrap();
    let (_, ctx) = commit(s, &o2, Some("P")).await;
    assert_eq!(
        ctx,
        Context {
            first_order: false,
            promoter_month_prior: 10_000,
            merchant_month_prior: 10_000
        }
    );
    // A new month starts from zero.
    let mut r3 = raw("O-3", "B2", 700, 1);
    r3.paid_at = Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
    let o3 = Order::parse(&r3, "order").unwrap();
    let (_, ctx) = commit(s, &o3, Some("P")).await;
    assert_eq!(
        ctx,
        Context {
            first_order: true,
            promoter_month_prior: 0,
            merchant_month_prior: 0
        }
    );
    // Preview reads without moving.
    let plan_ctx = s
        .read_context(&SplitPlan {
            order_id: "O-9".into(),
            fingerprint: String::new(),
            merchant: "M1".into(),
            buyer: "B1".into(),
            currency: "CNY".into(),
            month: "2026-11".into(),
            primary_promoter: Some("P".into()),
            sales: 1,
            paid_at: Utc::now(),
            ruleset: Arc::new(ruleset::compile("").ruleset.unwrap()),
        })
        .await
        .unwrap();
    assert_eq!(
        plan_ctx,
        Context {
            first_order: false,
            promoter_month_prior: 15_000,
            merchant_month_prior: 15_000
        }
    );
    // Listing by account, newest first, with a cursor.
    let all = s
        .list_splits("promoter:P", None, None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|a| a.order_id.as_str()).collect::<Vec<_>>(),
        ["O-3", "O-2", "O-1"]
    );
    let after = s
        .list_splits(
            "promoter:P",
            None,
            None,
            Some((all[0].paid_at, all[0].order_id.clone())),
            10,
        )
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    let nov = s
        .list_splits(
            "merchant:M1",
            Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()),
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(nov.len(), 2);
    assert_eq!(
        s.get_split("O-2")
            .await
            .unwrap()
            .unwrap()
            .result
            .total_of(&"promoter:P".parse().unwrap()),
        500
    );
    app.shutdown().await;
}
both_backends!(store_commits_once_and_moves_counters_with_the_result);

async fn store_refuses_a_result_that_breaks_the_money_invariant(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    let o = Order::parse(&raw("O-BAD", "B1", 10_000, 3), "order").unwrap();
    let rs = Arc::new(ruleset::compile("").ruleset.unwrap());
    let plan = SplitPlan {
        order_id: o.id.clone(),
        fingerprint: "f".into(),
        merchant: "M1".into(),
        buyer: "B1".into(),
        currency: "CNY".into(),
        month: "2026-11".into(),
        primary_promoter: None,
        sales: o.sales(),
        paid_at: o.paid_at,
        ruleset: rs.clone(),
    };
    let snap = NetworkSnapshot::default();
    let broken = |ctx: &Context| {
        let mut r = engine::compute(
            &o,
            &rs,
            &Inputs {
                network: &snap,
                context: ctx.clone(),
                ruleset_version: 1,
                fingerprint: "f".into(),
                now: Utc::now(),
            },
        )?;
        r.lines[0].shares[0].amount += 1; // a cent out of thin air
        r.totals[0].amount += 1;
        Ok(r)
    };
    let e = s.commit_split(&plan, &broken).await.unwrap_err();
    assert!(matches!(e, StoreError::Invariant(_)), "{e:?}");
    assert_eq!(app.count("splits").await, 0);
    assert_eq!(
        app.count("volumes").await,
        0,
        "the counters moved back with the rollback"
    );
    app.shutdown().await;
}
both_backends!(store_refuses_a_result_that_breaks_the_money_invariant);

/// Contexts the engine was called with, by order id.
type Seen = Arc<std::sync::Mutex<Vec<(String, Context)>>>;

/// A queued Compute of `o` (as the group committer builds it); `fail` makes the engine
/// refuse it, as it refuses an order whose rule set needs a missing field.
/// The rule set reads order history (a first_order condition), so every order sees the
/// counters and buyers stored before it.
fn pending(o: &Order, promoter: Option<&str>, seen: &Seen, fail: bool) -> PendingSplit {
    pending_under(HISTORY_RULES, o, promoter, seen, fail)
}

/// 10 % at level 1 either way; the first rule makes the rule set read order history.
const HISTORY_RULES: &str = "rules: [{id: first, priority: 1, when: {first_order: true}, levels: ['0.10']}, {id: all, levels: ['0.10']}]\n";
/// The same rates without reading order history.
const PLAIN_RULES: &str = "rules: [{id: all, levels: ['0.10']}]\n";

fn pending_under(
    doc: &str,
    o: &Order,
    promoter: Option<&str>,
    seen: &Seen,
    fail: bool,
) -> PendingSplit {
    let rs = Arc::new(ruleset::compile(doc).ruleset.unwrap());
    let mut snap = NetworkSnapshot::default();
    if let Some(p) = promoter {
        snap.insert(prorata::domain::network::PromoterNode {
            id: p.into(),
            parent: None,
            grade: None,
            status: Status::Active,
        });
        snap.bound = Some(p.into());
    }
    let fp = fingerprint::of(o);
    let plan = SplitPlan {
        order_id: o.id.clone(),
        fingerprint: fp.clone(),
        merchant: o.merchant.clone(),
        buyer: o.buyer.clone(),
        currency: "CNY".into(),
        month: engine::month_key(o.paid_at, &rs).into(),
        primary_promoter: promoter.map(Into::into),
        sales: o.sales(),
        paid_at: o.paid_at,
        ruleset: rs.clone(),
    };
    let (o, seen) = (o.clone(), seen.clone());
    PendingSplit::new(
        plan,
        Box::new(move |ctx: &Context| {
            seen.lock().unwrap().push((o.id.clone(), ctx.clone()));
            if fail {
                return Err(EngineError::MissingField(
                    "order.lines[0].unit_cost".into(),
                    "the profit base needs a cost".into(),
                ));
            }
            engine::compute(
                &o,
                &rs,
                &Inputs {
                    network: &snap,
                    context: ctx.clone(),
                    ruleset_version: 1,
                    fingerprint: fp.clone(),
                    now: Utc::now(),
                },
            )
        }),
    )
}

fn ctx(first_order: bool, promoter: i64, merchant: i64) -> Context {
    Context {
        first_order,
        promoter_month_prior: promoter,
        merchant_month_prior: merchant,
    }
}

async fn a_batch_stores_what_one_order_at_a_time_would_and_a_bad_order_fails_alone(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    let seen: Seen = Default::default();
    // Two orders of one buyer and promoter, a duplicate id, another buyer without one.
    let batch = vec![
        pending(&order("O-1", "B1", 10_000), Some("P"), &seen, false),
        pending(&order("O-2", "B1", 20_000), Some("P"), &seen, false),
        pending(&order("O-1", "B1", 10_000), Some("P"), &seen, false),
        pending(&order("O-3", "B2", 5_000), None, &seen, false),
    ];
    let out = s.commit_splits(&batch).await.unwrap();
    assert!(matches!(out[0], Ok(CommitOutcome::Stored { .. })));
    assert!(matches!(out[1], Ok(CommitOutcome::Stored { .. })));
    let Ok(CommitOutcome::Existing(dup)) = &out[2] else {
        panic!("the duplicate replays the first: {:?}", out[2]);
    };
    assert_eq!(dup.fingerprint, batch[0].plan.fingerprint);
    assert!(matches!(out[3], Ok(CommitOutcome::Stored { .. })));
    // Each order read the counters as if it had been stored alone, in batch order.
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("O-1".to_string(), ctx(true, 0, 0)),
            ("O-2".to_string(), ctx(false, 10_000, 10_000)),
            ("O-3".to_string(), ctx(true, 0, 30_000)),
        ]
    );
    assert_eq!(app.count("splits").await, 3);
    assert_eq!(app.count("outbox WHERE kind = 'split_computed'").await, 3);
    let shares: i64 = [&out[0], &out[1], &out[3]]
        .iter()
        .map(|o| match o {
            Ok(CommitOutcome::Stored { result, .. }) => result.totals.len() as i64,
            _ => unreachable!(),
        })
        .sum();
    assert_eq!(app.count("split_accounts").await, shares);
    for id in ["O-1", "O-2", "O-3"] {
        let stored = s.get_split(id).await.unwrap().unwrap();
        stored.result.check().unwrap();
    }
    // Each split's event, in batch order, carries the stored result (read from splits,
    // not stored twice).
    let events = s.outbox_unpublished(100).await.unwrap();
    let events: Vec<_> = events
        .iter()
        .filter(|e| e.kind == prorata::store::SPLIT_COMPUTED)
        .collect();
    assert_eq!(
        events.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["O-1", "O-2", "O-3"]
    );
    for e in events {
        let stored = s.get_split(&e.key).await.unwrap().unwrap();
        let body: prorata::domain::split::SplitResult = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body, stored.result);
    }
    assert_eq!(
        app.count("outbox WHERE kind = 'split_computed' AND body = ''")
            .await,
        3
    );

    // A batch with an order the engine refuses: it fails alone, the others are stored
    // with the counters they would have read without it.
    seen.lock().unwrap().clear();
    let batch = vec![
        pending(&order("O-1", "B1", 10_000), Some("P"), &seen, false),
        pending(&order("O-4", "B3", 1_000), Some("P"), &seen, true),
        pending(&order("O-5", "B3", 2_000), Some("P"), &seen, false),
    ];
    let out = s.commit_splits(&batch).await.unwrap();
    assert!(matches!(out[0], Ok(CommitOutcome::Existing(_))));
    assert!(
        matches!(
            out[1],
            Err(StoreError::Engine(EngineError::MissingField(..)))
        ),
        "{:?}",
        out[1]
    );
    assert!(matches!(out[2], Ok(CommitOutcome::Stored { .. })));
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last, ("O-5".to_string(), ctx(true, 30_000, 35_000)));
    assert!(s.get_split("O-4").await.unwrap().is_none());

    // A full batch of 64 new orders moves the counters by exactly their sum.
    let batch: Vec<PendingSplit> = (0..64)
        .map(|i| {
            pending(
                &order(&format!("B-{i}"), &format!("C{i}"), 100 + i),
                Some("P"),
                &seen,
                false,
            )
        })
        .collect();
    let out = s.commit_splits(&batch).await.unwrap();
    assert!(out
        .iter()
        .all(|o| matches!(o, Ok(CommitOutcome::Stored { .. }))));
    let (_, after) = commit(s, &order("O-6", "B9", 1), Some("P")).await;
    let sum: i64 = (0..64).map(|i| 100 + i).sum();
    assert_eq!(after, ctx(true, 32_000 + sum, 37_000 + sum));
    assert_eq!(app.count("splits").await, 4 + 64 + 1);

    // The refused order's failed bulk attempt kept nothing of it (on PostgreSQL the batch
    // claimed its key first): once valid, it is stored, in a batch beside a replay.
    let batch = vec![
        pending(&order("O-4", "B3", 1_000), Some("P"), &seen, false),
        pending(&order("O-5", "B3", 2_000), Some("P"), &seen, false),
    ];
    let out = s.commit_splits(&batch).await.unwrap();
    assert!(
        matches!(out[0], Ok(CommitOutcome::Stored { .. })),
        "{:?}",
        out[0]
    );
    assert!(
        matches!(out[1], Ok(CommitOutcome::Existing(_))),
        "{:?}",
        out[1]
    );
    assert_eq!(app.count("splits").await, 4 + 64 + 2);
    app.shutdown().await;
}
both_backends!(a_batch_stores_what_one_order_at_a_time_would_and_a_bad_order_fails_alone);

/// A valid 1-line order of `merchant`.
fn order_of(merchant: &str, id: &str, buyer: &str, minor: i64) -> Order {
    let mut r = raw(id, buyer, minor, 3);
    r.merchant = merchant.into();
    Order::parse(&r, "order").unwrap()
}

async fn concurrent_batches_stored_one_order_at_a_time_do_not_deadlock(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    let seen: Seen = Default::default();
    // Each batch holds an order the engine refuses, so each is stored one order per
    // savepoint; their orders name two merchants in opposite orders. Taken order by
    // order, their counter rows would be locked crosswise (a deadlock, which PostgreSQL
    // breaks after a second by failing one of the orders).
    for round in 0..8 {
        let batch = |first: &str, second: &str, tag: &str| {
            vec![
                pending(
                    &order_of(
                        first,
                        &format!("{tag}-{round}-1"),
                        &format!("{tag}{round}a"),
                        1_000,
                    ),
                    Some("P"),
                    &seen,
                    false,
                ),
                pending(
                    &order_of(
                        second,
                        &format!("{tag}-{round}-2"),
                        &format!("{tag}{round}b"),
                        2_000,
                    ),
                    Some("Q"),
                    &seen,
                    false,
                ),
                pending(
                    &order_of(
                        first,
                        &format!("{tag}-{round}-3"),
                        &format!("{tag}{round}c"),
                        3_000,
                    ),
                    None,
                    &seen,
                    true,
                ),
            ]
        };
        let (a, b) = (batch("MA", "MB", "X"), batch("MB", "MA", "Y"));
        let (out_a, out_b) = tokio::join!(s.commit_splits(&a), s.commit_splits(&b));
        for out in [out_a.unwrap(), out_b.unwrap()] {
            assert!(
                matches!(out[0], Ok(CommitOutcome::Stored { .. })),
                "round {round}: {:?}",
                out[0]
            );
            assert!(
                matches!(out[1], Ok(CommitOutcome::Stored { .. })),
                "round {round}: {:?}",
                out[1]
            );
            assert!(
                matches!(out[2], Err(StoreError::Engine(_))),
                "round {round}: {:?}",
                out[2]
            );
        }
    }
    assert_eq!(app.count("splits").await, 8 * 4);
    app.shutdown().await;
}
both_backends!(concurrent_batches_stored_one_order_at_a_time_do_not_deadlock);

async fn a_batch_whose_rules_read_no_history_moves_counters_and_buyers_exactly(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    let seen: Seen = Default::default();
    assert!(!ruleset::compile(PLAIN_RULES)
        .ruleset
        .unwrap()
        .reads_order_history());
    let plain = |o: Order, promoter| pending_under(PLAIN_RULES, &o, promoter, &seen, false);
    let batch = vec![
        plain(order("O-1", "B1", 10_000), Some("P")),
        plain(order("O-2", "B1", 20_000), Some("P")),
        plain(order("O-1", "B1", 10_000), Some("P")),
        plain(order("O-3", "B2", 5_000), None),
    ];
    let out = s.commit_splits(&batch).await.unwrap();
    assert!(matches!(out[0], Ok(CommitOutcome::Stored { .. })));
    assert!(matches!(out[1], Ok(CommitOutcome::Stored { .. })));
    assert!(matches!(out[2], Ok(CommitOutcome::Existing(_))));
    assert!(matches!(out[3], Ok(CommitOutcome::Stored { .. })));
    for r in &out {
        if let Ok(CommitOutcome::Stored { result, .. }) = r {
            result.check().unwrap();
        }
    }
    {
        // These rules read no history: the engine ran once per queued Compute (the
        // repeated O-1 too), when it was queued, with no state of the store, and the
        // batch (not the per-order fallback, which would run it again) only wrote it.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(
            seen.iter().all(|(_, c)| *c == Context::default()),
            "{seen:?}"
        );
    }
    // An order that reads history sees both counters and both buyers.
    let (_, after) = commit(s, &order("O-4", "B1", 1), Some("P")).await;
    assert_eq!(after, ctx(false, 30_000, 35_000));
    let (_, fresh) = commit(s, &order("O-5", "B9", 1), Some("P")).await;
    assert_eq!(fresh, ctx(true, 30_001, 35_001));

    // Concurrent batches of both kinds on the same counter rows and buyers: none fails,
    // and the counters end at exactly the sum of what was stored.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let doc = if t % 2 == 0 {
                PLAIN_RULES
            } else {
                HISTORY_RULES
            };
            let batch: Vec<PendingSplit> = (0..16)
                .map(|i| {
                    let o = order(&format!("C-{t}-{i}"), &format!("D{}", i % 4), 100);
                    pending_under(doc, &o, Some("P"), &seen, false)
                })
                .collect();
            let out = s.commit_splits(&batch).await.unwrap();
            assert!(
                out.iter()
                    .all(|o| matches!(o, Ok(CommitOutcome::Stored { .. }))),
                "{out:?}"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, last) = commit(s, &order("O-6", "D0", 1), Some("P")).await;
    assert_eq!(
        last,
        ctx(false, 30_002 + 8 * 16 * 100, 35_002 + 8 * 16 * 100)
    );
    assert_eq!(app.count("buyers").await, 3 + 4);

    // An order the engine refuses when it is queued is tried again in the batch, refused
    // there, and fails alone (the per-order fallback); the order beside it is stored.
    seen.lock().unwrap().clear();
    let batch = vec![
        pending_under(
            PLAIN_RULES,
            &order("E-1", "E1", 1_000),
            Some("P"),
            &seen,
            true,
        ),
        plain(order("E-2", "E2", 2_000), Some("P")),
    ];
    let out = s.commit_splits(&batch).await.unwrap();
    assert!(
        matches!(
            out[0],
            Err(StoreError::Engine(EngineError::MissingField(..)))
        ),
        "{:?}",
        out[0]
    );
    assert!(
        matches!(out[1], Ok(CommitOutcome::Stored { .. })),
        "{:?}",
        out[1]
    );
    assert!(s.get_split("E-1").await.unwrap().is_none());
    assert!(s.get_split("E-2").await.unwrap().is_some());
    let calls: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(calls.first().map(String::as_str), Some("E-1"), "{calls:?}");
    assert!(
        calls.iter().filter(|id| *id == "E-1").count() >= 2,
        "{calls:?}"
    );

    // A batch holding an order stored before (a replay the result cache did not answer,
    // or an order another replica stored): PostgreSQL's one-call path finds its key
    // taken and stores nothing, and the batch is stored the general way. The stored
    // order replays, the new one is stored once, and the counters move by it alone.
    let batch = vec![
        plain(order("R-1", "R1", 700), Some("P")),
        plain(order("E-2", "E2", 2_000), Some("P")),
    ];
    let out = s.commit_splits(&batch).await.unwrap();
    assert!(
        matches!(out[0], Ok(CommitOutcome::Stored { .. })),
        "{:?}",
        out[0]
    );
    match &out[1] {
        Ok(CommitOutcome::Existing(split)) => assert_eq!(split.result.order_id, "E-2"),
        other => panic!("{other:?}"),
    }
    let (_, end) = commit(s, &order("O-7", "D0", 1), Some("P")).await;
    let moved = 8 * 16 * 100 + 1 + 2_000 + 700;
    assert_eq!(end, ctx(false, 30_002 + moved, 35_002 + moved));
    assert_eq!(app.count("buyers").await, 3 + 4 + 2);
    assert_eq!(app.count("splits").await, 6 + 8 * 16 + 1 + 1 + 1);
    app.shutdown().await;
}
both_backends!(a_batch_whose_rules_read_no_history_moves_counters_and_buyers_exactly);

/// A batch's sales raise its promoter's grade once, named after the first stored order
/// of the batch, with one grade_changed event (both bulk paths: SQLite's synchronous
/// connection and PostgreSQL's CTE statement).
async fn a_batch_whose_sales_reach_a_grade_upgrades_its_promoter_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = &app.store;
    s.upsert_promoter(
        PromoterUpsert {
            id: "P".into(),
            ..Default::default()
        },
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    let seen: Seen = Default::default();
    const GRADED: &str =
        "rules: [{id: all, levels: ['0.10']}]\ngrades: [{id: silver, upgrade: {month_sales: '150'}}]\n";
    let batch = vec![
        pending_under(GRADED, &order("G-1", "B1", 10_000), Some("P"), &seen, false),
        pending_under(GRADED, &order("G-2", "B2", 10_000), Some("P"), &seen, false),
    ];
    let out = s.commit_splits(&batch).await.unwrap();
    let upgraded: Vec<Vec<String>> = out
        .iter()
        .map(|o| match o {
            Ok(CommitOutcome::Stored { upgraded, .. }) => upgraded.clone(),
            other => panic!("stored: {other:?}"),
        })
        .collect();
    // The counters moved for the whole batch before the checks: 200.00 ≥ 150.
    assert_eq!(upgraded, [vec!["P".to_string()], vec![]]);
    let p = s.get_upline("P", 0).await.unwrap().pop().unwrap();
    assert_eq!(p.grade.as_deref(), Some("silver"));
    assert_eq!(app.count("outbox WHERE kind = 'grade_changed'").await, 1);
    let events = s.outbox_unpublished(100).await.unwrap();
    let change = events.iter().find(|e| e.kind == "grade_changed").unwrap();
    let body: prorata::store::GradeChange = serde_json::from_str(&change.body).unwrap();
    assert_eq!(
        (
            body.promoter.as_str(),
            body.grade.as_str(),
            body.cause.as_str()
        ),
        ("P", "silver", "order G-1")
    );
    app.shutdown().await;
}
both_backends!(a_batch_whose_sales_reach_a_grade_upgrades_its_promoter_once);

/// PostgreSQL's one-call batches run on connections the store holds between batches:
/// the connection's last statement is the batch's call, not a ping (a sqlx pool pings
/// every connection returned to it, one more round trip per batch). When the held
/// connection breaks (here every backend of the store is terminated), the batch is
/// stored the general way, and the next batch opens a new connection; one idle for over
/// a second is pinged first, and replaced when the ping fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_held_batch_connection_is_replaced_and_its_batch_stored() {
    use prorata::store::postgres::PgStore;
    if !crate::helpers::postgres_available().await {
        return;
    }
    let name = format!("prorata_held_{}", std::process::id());
    let url = crate::helpers::pg_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(
            &format!("{url}{sep}application_name={name}"),
            4,
            Some(&name),
        )
        .await
        .unwrap(),
    );
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    // The store's connections that last ran a one-call batch, with their pid.
    let batch_pids = || {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1
             AND query LIKE 'SELECT prorata_store_batch%' ORDER BY pid",
        )
        .bind(&name)
        .fetch_all(&admin)
    };
    let seen: Seen = Default::default();
    let plain = |id: &str, minor| {
        pending_under(
            PLAIN_RULES,
            &order(id, "B1", minor),
            Some("P"),
            &seen,
            false,
        )
    };
    let stored = |out: Vec<Result<CommitOutcome, StoreError>>| {
        for r in out {
            match r {
                Ok(CommitOutcome::Stored { result, .. }) => result.check().unwrap(),
                other => panic!("stored: {other:?}"),
            }
        }
    };

    stored(
        store
            .commit_splits(&[plain("H-1", 1_000), plain("H-2", 2_000)])
            .await
            .unwrap(),
    );
    let first = batch_pids().await.unwrap();
    assert_eq!(
        first.len(),
        1,
        "one held connection ran the call: {first:?}"
    );

    // Ends every backend of the store (each call waits up to 5 s for its backend to exit):
    // the main pool's and the held one.
    let terminate = || async {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(killed.len() >= 2 && killed.iter().all(|k| *k), "{killed:?}");
    };
    terminate().await;
    // The held connection's call fails: the batch is stored the general way.
    stored(store.commit_splits(&[plain("H-3", 3_000)]).await.unwrap());
    // The next batch opens a new connection for its one call.
    stored(store.commit_splits(&[plain("H-4", 4_000)]).await.unwrap());
    let after = batch_pids().await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, first, "a new connection");

    // Held for over a second, a connection is pinged before its next call: a broken one
    // is replaced there, and the batch still goes in one call on the new connection.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    terminate().await;
    stored(store.commit_splits(&[plain("H-5", 5_000)]).await.unwrap());
    let last = batch_pids().await.unwrap();
    assert_eq!(
        last.len(),
        1,
        "the call ran on a new held connection: {last:?}"
    );
    assert_ne!(last, after);
    for id in ["H-1", "H-2", "H-3", "H-4", "H-5"] {
        assert!(store.get_split(id).await.unwrap().is_some(), "{id}");
    }
    let sales: i64 = sqlx::query_scalar(&format!(
        "SELECT amount FROM \"{name}\".volumes WHERE kind = 'merchant' AND subject = 'M1'"
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(sales, 15_000, "each order counted once");
    admin.close().await;
    PgStore::drop_schema(&url, &name).await.unwrap();
}
