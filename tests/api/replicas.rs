//! Three replicas on loopback sharing PostgreSQL and Redis (issue 4's scale-out test).
//! The test runs its own redis-server on a free port, so it can stop and restart it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prorata::app::App;
use prorata::cache::CacheSettings;
use prorata::grpc::pb;
use prorata::grpc::pb::commission_service_client::CommissionServiceClient;
use prorata::grpc::pb::network_service_client::NetworkServiceClient;
use prorata::grpc::pb::rule_service_client::RuleServiceClient;
use prorata::startup::{self, ServerLimits};
use prorata::store::postgres::PgStore;
use prost::Message;

use crate::helpers::{connect, order, pg_url, postgres_available, services_required};

struct Redis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl Redis {
    async fn start(port: u16) -> Option<Redis> {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                if services_required() {
                    panic!("redis-server is required (PRORATA_REQUIRE_SERVICES=1) but cannot start: {e}");
                }
                eprintln!("SKIPPING the replicas test: redis-server cannot start ({e})");
                return None;
            }
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(Redis {
                    port,
                    child: Some(child),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not listen on {port}");
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Replica {
    app: Arc<App>,
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn replica(schema: &str, redis: &str) -> Replica {
    let store = Arc::new(PgStore::connect(&pg_url(), 8, Some(schema)).await.unwrap());
    let settings = CacheSettings {
        redis_url: Some(redis.into()),
        ..Default::default()
    };
    let app = App::new(store, &settings).await.unwrap();
    let (listener, addr) = startup::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(startup::run(
        listener,
        app.clone(),
        ServerLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Replica { app, addr, stop }
}

async fn until(what: &str, limit: Duration, mut ok: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_changes_within_100ms_store_each_order_once_and_survive_redis_stopping(
) {
    if !postgres_available().await {
        return;
    }
    let port = free_port();
    let Some(mut redis) = Redis::start(port).await else {
        return;
    };
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let schema = format!("prorata_replicas_{}", std::process::id());
    let _ = PgStore::drop_schema(&pg_url(), &schema).await;
    let r = [
        replica(&schema, &redis_url).await,
        replica(&schema, &redis_url).await,
        replica(&schema, &redis_url).await,
    ];
    for x in &r {
        until(
            "Redis reachable from every replica",
            Duration::from_secs(5),
            async || x.app.redis_healthy() == Some(true),
        )
        .await;
    }
    let ch: Vec<_> = futures::future::join_all(r.iter().map(|x| connect(x.addr))).await;
    let mut rules0 = RuleServiceClient::new(ch[0].clone());
    let mut net0 = NetworkServiceClient::new(ch[0].clone());
    rules0
        .publish_rule_set(pb::PublishRuleSetRequest {
            document: "platform: {rate: '0.10'}\nrules: [{id: all, levels: ['0.10', '0.05']}]\n"
                .into(),
        })
        .await
        .unwrap();
    for (id, parent) in [("A", None), ("B", Some("A")), ("C", Some("B")), ("D", None)] {
        net0.upsert_promoter(pb::UpsertPromoterRequest {
            id: id.into(),
            parent: parent.map(Into::into),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    net0.bind_customer(pb::BindCustomerRequest {
        customer: "K".into(),
        promoter: "C".into(),
    })
    .await
    .unwrap();

    // A rule set published on one replica applies on the others within 100 ms.
    for x in &ch[1..] {
        let mut rules = RuleServiceClient::new(x.clone());
        until(
            "the first version on every replica",
            Duration::from_secs(3),
            async || {
                rules
                    .get_rule_set(pb::GetRuleSetRequest::default())
                    .await
                    .is_ok()
            },
        )
        .await;
    }
    rules0
        .publish_rule_set(pb::PublishRuleSetRequest {
            document: "platform: {rate: '0.20'}\nrules: [{id: all, levels: ['0.10', '0.05']}]\n"
                .into(),
        })
        .await
        .unwrap();
    for x in &ch[1..] {
        let mut rules = RuleServiceClient::new(x.clone());
        let took = until(
            "a new rule set on another replica",
            Duration::from_millis(100),
            async || {
                rules
                    .get_rule_set(pb::GetRuleSetRequest::default())
                    .await
                    .ok()
                    .map(|r| r.into_inner().ruleset.unwrap().version)
                    == Some(2)
            },
        )
        .await;
        eprintln!("rule set visible on another replica after {took:?}");
    }
    // A network change made on one replica is seen by the others' caches within 100 ms.
    let mut net1 = NetworkServiceClient::new(ch[1].clone());
    let up = net1
        .get_upline(pb::GetUplineRequest {
            promoter: "C".into(),
            max_depth: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.promoters.len(), 3, "C, B, A (now cached on replica 1)");
    net0.upsert_promoter(pb::UpsertPromoterRequest {
        id: "C".into(),
        parent: Some("D".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let took = until(
        "a move seen by another replica's cache",
        Duration::from_millis(100),
        async || {
            let up = net1
                .get_upline(pb::GetUplineRequest {
                    promoter: "C".into(),
                    max_depth: 5,
                })
                .await
                .unwrap()
                .into_inner();
            up.promoters.get(1).map(|p| p.id.as_str()) == Some("D")
        },
    )
    .await;
    eprintln!("promoter move visible on another replica after {took:?}");

    // 300 concurrent Computes of 100 orders over the three replicas, Redis stopped midway.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let mut c = CommissionServiceClient::new(ch[i % 3].clone());
        tasks.push(tokio::spawn(async move {
            let o = order(&format!("O-R{}", i % 100), "K", "100.00");
            let s = c
                .compute(pb::ComputeRequest { order: Some(o) })
                .await
                .map(|r| r.into_inner().split.unwrap());
            (i % 100, s)
        }));
        if i == 150 {
            redis.stop().await;
        }
    }
    let mut answers: std::collections::HashMap<usize, Vec<u8>> = std::collections::HashMap::new();
    for t in tasks {
        let (id, s) = t.await.unwrap();
        let bytes = s.expect("no call fails while Redis stops").encode_to_vec();
        let first = answers.entry(id).or_insert_with(|| bytes.clone());
        assert_eq!(
            *first, bytes,
            "order {id}: every replica answers the same bytes"
        );
    }
    assert_eq!(answers.len(), 100);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            pg_url()
                .parse::<sqlx::postgres::PgConnectOptions>()
                .unwrap()
                .options([("search_path", schema.as_str())]),
        )
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM splits")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 100, "exactly one stored result per order id");
    // Without Redis the replicas still serve and say so; with it back they recover alone.
    until("Redis reported down", Duration::from_secs(5), async || {
        r[2].app.redis_healthy() == Some(false)
    })
    .await;
    let mut c = CommissionServiceClient::new(ch[2].clone());
    c.compute(pb::ComputeRequest {
        order: Some(order("O-NO-REDIS", "K", "5.00")),
    })
    .await
    .expect("serving without Redis");
    let Some(redis2) = Redis::start(port).await else {
        return;
    };
    for x in &r {
        until(
            "Redis reachable again",
            Duration::from_secs(10),
            async || x.app.redis_healthy() == Some(true),
        )
        .await;
    }
    drop(redis2);
    pool.close().await;
    for x in r {
        let _ = x.stop.send(());
    }
    let _ = PgStore::drop_schema(&pg_url(), &schema).await;
}
