//! The tonic services: convert, call [`App`], convert back. No business logic here.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use bytes::Bytes;

use super::convert;
use super::encode;
use super::pb;
use super::pb::network_service_server::NetworkService;
use super::pb::rule_service_server::RuleService;
use super::pb::server::commission_service_server::CommissionService;
use super::wire;
use crate::app::{App, AppError, Computed};
use crate::cache::CachedSplit;
use crate::domain::order::FieldError;
use crate::store::{ImportItem, MAX_IMPORT_ITEMS};

/// Orders of one ComputeStream computed at the same time (answers keep request order).
pub const STREAM_IN_FLIGHT: usize = 32;

/// Response header that marks a replayed Compute.
pub const REPLAYED_HEADER: &str = "prorata-replayed";

/// The services' shared state.
#[derive(Debug, Clone)]
pub struct Services {
    app: Arc<App>,
}

impl Services {
    /// Services over an app.
    pub fn new(app: Arc<App>) -> Self {
        Services { app }
    }
}

fn invalid(e: FieldError) -> Status {
    AppError::Invalid(e).into()
}

/// A stored result's `Split` message, encoded once and then sent as those bytes.
fn encoded(stored: &CachedSplit) -> Bytes {
    stored
        .encoded
        .get_or_init(|| encode::split(&stored.result))
        .clone()
}

fn require_order(o: &Option<pb::Order>) -> Result<&pb::Order, Status> {
    o.as_ref()
        .ok_or_else(|| invalid(FieldError::new("order", "is required")))
}

/// Computes one Compute request: a replay of identical bytes from the cache
/// ([`App::replay_identical`]), otherwise decoded, converted and computed. `order_id` is
/// [`wire::order_id`] of the request's bytes.
async fn compute_request(
    app: &App,
    request: &wire::ComputeRequest,
    order_id: Option<&str>,
) -> Result<Computed, Status> {
    let bytes = request.bytes();
    if let Some(id) = order_id {
        if let Some(c) = app.replay_identical(id, bytes).await {
            return Ok(c);
        }
    }
    let msg = request.decode_message().map_err(|e| {
        invalid(FieldError::new(
            "request",
            format!("is not a ComputeRequest message: {e}"),
        ))
    })?;
    let raw = convert::raw_order(require_order(&msg.order)?).map_err(invalid)?;
    let c = app.compute(&raw).await?;
    App::remember_request(&c, bytes);
    Ok(c)
}

#[tonic::async_trait]
impl CommissionService for Services {
    type ComputeStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::ComputeStreamResponse, Status>> + Send + 'static>,
    >;

    async fn compute_stream(
        &self,
        req: Request<Streaming<wire::ComputeRequest>>,
    ) -> Result<Response<Self::ComputeStreamStream>, Status> {
        let app = self.app.clone();
        let answers = futures::StreamExt::map(req.into_inner(), move |msg| {
            let app = app.clone();
            async move {
                let msg = msg?;
                let id = wire::order_id(msg.bytes());
                let outcome = compute_request(&app, &msg, id).await;
                let order_id = id.unwrap_or_default().to_string();
                Ok(match outcome {
                    Ok(c) => pb::ComputeStreamResponse {
                        order_id,
                        split: Some(convert::split(&c.split.result)),
                        replayed: c.replayed,
                        code: 0,
                        message: String::new(),
                    },
                    Err(s) => pb::ComputeStreamResponse {
                        order_id,
                        split: None,
                        replayed: false,
                        code: s.code() as i32,
                        message: s.message().to_string(),
                    },
                })
            }
        });
        let answers = futures::StreamExt::buffered(answers, STREAM_IN_FLIGHT);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn compute(
        &self,
        req: Request<wire::ComputeRequest>,
    ) -> Result<Response<pb::ComputeResponse>, Status> {
        let req = req.get_ref();
        let out = compute_request(&self.app, req, wire::order_id(req.bytes())).await?;
        let mut resp = Response::new(pb::ComputeResponse::encoded(encoded(&out.split)));
        resp.metadata_mut().insert(
            REPLAYED_HEADER,
            MetadataValue::from_static(if out.replayed { "true" } else { "false" }),
        );
        Ok(resp)
    }

    async fn preview(
        &self,
        req: Request<pb::PreviewRequest>,
    ) -> Result<Response<pb::PreviewResponse>, Status> {
        let r = req.get_ref();
        let raw = convert::raw_order(require_order(&r.order)?).map_err(invalid)?;
        let draft = (!r.ruleset_document.is_empty()).then_some(r.ruleset_document.as_str());
        let (result, warnings) = self.app.preview(&raw, draft).await?;
        Ok(Response::new(pb::PreviewResponse {
            split: Some(convert::split(&result)),
            warnings: convert::issues(&warnings),
        }))
    }

    async fn get_split(
        &self,
        req: Request<pb::GetSplitRequest>,
    ) -> Result<Response<pb::GetSplitResponse>, Status> {
        let stored = self.app.get_split(&req.get_ref().order_id).await?;
        Ok(Response::new(pb::GetSplitResponse::encoded(encoded(
            &stored,
        ))))
    }

    async fn list_splits(
        &self,
        req: Request<pb::ListSplitsRequest>,
    ) -> Result<Response<pb::ListSplitsResponse>, Status> {
        let r = req.get_ref();
        let from = convert::opt_time("from", &r.from).map_err(invalid)?;
        let to = convert::opt_time("to", &r.to).map_err(invalid)?;
        let page = self
            .app
            .list_splits(&r.account, from, to, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListSplitsResponse {
            splits: page.items.iter().map(convert::summary).collect(),
            next_page_token: page.next,
        }))
    }
}

#[tonic::async_trait]
impl RuleService for Services {
    async fn validate_rule_set(
        &self,
        req: Request<pb::ValidateRuleSetRequest>,
    ) -> Result<Response<pb::ValidateRuleSetResponse>, Status> {
        let c = self.app.validate_ruleset(&req.get_ref().document);
        Ok(Response::new(pb::ValidateRuleSetResponse {
            valid: c.errors.is_empty(),
            errors: convert::issues(&c.errors),
            warnings: convert::issues(&c.warnings),
        }))
    }

    async fn publish_rule_set(
        &self,
        req: Request<pb::PublishRuleSetRequest>,
    ) -> Result<Response<pb::PublishRuleSetResponse>, Status> {
        let (stored, warnings) = self.app.publish_ruleset(&req.get_ref().document).await?;
        Ok(Response::new(pb::PublishRuleSetResponse {
            ruleset: Some(convert::ruleset(&stored)),
            warnings: convert::issues(&warnings),
        }))
    }

    async fn get_rule_set(
        &self,
        req: Request<pb::GetRuleSetRequest>,
    ) -> Result<Response<pb::GetRuleSetResponse>, Status> {
        let r = req.get_ref();
        let at = convert::opt_time("at", &r.at).map_err(invalid)?;
        let stored = self.app.get_ruleset(r.version, at, &r.merchant).await?;
        Ok(Response::new(pb::GetRuleSetResponse {
            ruleset: Some(convert::ruleset(&stored)),
        }))
    }

    async fn list_rule_sets(
        &self,
        req: Request<pb::ListRuleSetsRequest>,
    ) -> Result<Response<pb::ListRuleSetsResponse>, Status> {
        let r = req.get_ref();
        let page = self.app.list_rulesets(r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListRuleSetsResponse {
            rulesets: page.items.iter().map(convert::ruleset).collect(),
            next_page_token: page.next,
        }))
    }
}

#[tonic::async_trait]
impl NetworkService for Services {
    async fn upsert_promoter(
        &self,
        req: Request<pb::UpsertPromoterRequest>,
    ) -> Result<Response<pb::UpsertPromoterResponse>, Status> {
        let up = convert::upsert(req.get_ref(), "").map_err(invalid)?;
        let out = self.app.upsert_promoter(up).await?;
        Ok(Response::new(pb::UpsertPromoterResponse {
            promoter: Some(convert::promoter(&out.promoter)),
            created: out.created,
        }))
    }

    async fn bind_customer(
        &self,
        req: Request<pb::BindCustomerRequest>,
    ) -> Result<Response<pb::BindCustomerResponse>, Status> {
        let r = req.get_ref();
        self.app.bind_customer(&r.customer, &r.promoter).await?;
        Ok(Response::new(pb::BindCustomerResponse {}))
    }

    async fn get_upline(
        &self,
        req: Request<pb::GetUplineRequest>,
    ) -> Result<Response<pb::GetUplineResponse>, Status> {
        let r = req.get_ref();
        let (nodes, truncated) = self.app.upline(&r.promoter, r.max_depth).await?;
        Ok(Response::new(pb::GetUplineResponse {
            promoters: nodes.iter().map(|n| convert::promoter(n)).collect(),
            truncated,
        }))
    }

    async fn import_network(
        &self,
        req: Request<Streaming<pb::ImportNetworkRequest>>,
    ) -> Result<Response<pb::ImportNetworkResponse>, Status> {
        let mut stream = req.into_inner();
        let mut items = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            let i = items.len();
            if i >= MAX_IMPORT_ITEMS {
                return Err(invalid(FieldError::new(
                    "items",
                    format!("at most {MAX_IMPORT_ITEMS} items per import"),
                )));
            }
            let item = match msg.item {
                Some(pb::import_network_request::Item::Promoter(p)) => ImportItem::Promoter(
                    convert::upsert(&p, &format!("items[{i}].promoter.")).map_err(invalid)?,
                ),
                Some(pb::import_network_request::Item::Binding(b)) => ImportItem::Binding {
                    customer: b.customer,
                    promoter: b.promoter,
                },
                None => return Err(invalid(FieldError::new(format!("items[{i}]"), "is empty"))),
            };
            items.push(item);
        }
        let s = self.app.import_network(items).await?;
        Ok(Response::new(pb::ImportNetworkResponse {
            promoters: s.promoters,
            bindings: s.bindings,
        }))
    }
}

#[tonic::async_trait]
impl pb::settlement_service_server::SettlementService for Services {
    async fn refund(
        &self,
        req: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let (m, replayed) = self.app.refund(convert::refund(req.get_ref())).await?;
        let mut resp = Response::new(pb::RefundResponse {
            reversal: Some(convert::movement(&m)),
        });
        resp.metadata_mut().insert(
            REPLAYED_HEADER,
            MetadataValue::from_static(if replayed { "true" } else { "false" }),
        );
        Ok(resp)
    }

    async fn redeem(
        &self,
        req: Request<pb::RedeemRequest>,
    ) -> Result<Response<pb::RedeemResponse>, Status> {
        let r = req.get_ref();
        let (m, replayed) = self
            .app
            .redeem(&r.order_id, &r.line_id, &r.redemption_id, r.uses)
            .await?;
        let mut resp = Response::new(pb::RedeemResponse {
            redemption: Some(convert::movement(&m)),
        });
        resp.metadata_mut().insert(
            REPLAYED_HEADER,
            MetadataValue::from_static(if replayed { "true" } else { "false" }),
        );
        Ok(resp)
    }

    async fn get_balance(
        &self,
        req: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let r = req.get_ref();
        let as_of = convert::opt_time("as_of", &r.as_of).map_err(invalid)?;
        let balances = self.app.balance(&r.account, as_of).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            account: r.account.clone(),
            balances: balances
                .iter()
                .map(|b| pb::Balance {
                    currency: b.currency.clone(),
                    deferred_minor: b.deferred,
                    pending_minor: b.pending,
                    available_minor: b.available,
                    in_payout_minor: b.in_payout,
                    paid_minor: b.paid,
                    debt_minor: b.debt,
                })
                .collect(),
        }))
    }

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let r = req.get_ref();
        let from = convert::opt_time("from", &r.from).map_err(invalid)?;
        let to = convert::opt_time("to", &r.to).map_err(invalid)?;
        let page = self
            .app
            .list_entries(&r.account, from, to, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: page.items.iter().map(convert::entry).collect(),
            next_page_token: page.next,
        }))
    }

    async fn create_payout(
        &self,
        req: Request<pb::CreatePayoutRequest>,
    ) -> Result<Response<pb::CreatePayoutResponse>, Status> {
        let r = req.get_ref();
        let as_of = convert::opt_time("as_of", &r.as_of).map_err(invalid)?;
        let (b, replayed) = self
            .app
            .create_payout(&r.batch_id, as_of, r.minimum_minor)
            .await?;
        Ok(Response::new(pb::CreatePayoutResponse {
            batch: Some(convert::payout(&b)),
            replayed,
        }))
    }

    async fn confirm_payout(
        &self,
        req: Request<pb::ConfirmPayoutRequest>,
    ) -> Result<Response<pb::ConfirmPayoutResponse>, Status> {
        use crate::domain::ledger::PayoutOutcome;
        let r = req.get_ref();
        let outcome = match pb::PayoutOutcome::try_from(r.outcome) {
            Ok(pb::PayoutOutcome::Paid) => Some(PayoutOutcome::Paid),
            Ok(pb::PayoutOutcome::Failed) => Some(PayoutOutcome::Failed),
            _ => None,
        };
        let replayed = self
            .app
            .confirm_payout(&r.batch_id, &r.account, outcome)
            .await?;
        Ok(Response::new(pb::ConfirmPayoutResponse { replayed }))
    }

    async fn reconcile(
        &self,
        req: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileResponse>, Status> {
        use crate::domain::order::RawAmount;
        let external: Vec<crate::settlement::ExternalOrder> = req
            .get_ref()
            .orders
            .iter()
            .map(|o| crate::settlement::ExternalOrder {
                order_id: o.order_id.clone(),
                paid: RawAmount::Minor(o.amount_paid_minor),
                refunded: RawAmount::Minor(o.amount_refunded_minor),
            })
            .collect();
        let report = self.app.reconcile(&external).await?;
        Ok(Response::new(pb::ReconcileResponse {
            orders_checked: report.orders_checked,
            accounts_checked: report.accounts_checked,
            discrepancies: report
                .discrepancies
                .iter()
                .map(|d| pb::Discrepancy {
                    kind: d.kind.to_string(),
                    subject: d.subject.clone(),
                    detail: d.detail.clone(),
                })
                .collect(),
        }))
    }
}
