//! The promoter network as the engine sees it: nodes with parent, grade and status.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::split::same_id;
use serde::{Deserialize, Serialize};

/// Most ancestors walked above a promoter (compression may skip non-active ones, so this
/// is larger than the 10 levels a schedule can pay). Bounds every chain walk.
pub const MAX_UPLINE_WALK: usize = 64;

/// A promoter's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Earns commissions.
    Active,
    /// Temporarily earns nothing.
    Frozen,
    /// Permanently earns nothing.
    Closed,
}

impl Status {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Frozen => "frozen",
            Status::Closed => "closed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Status::Active),
            "frozen" => Ok(Status::Frozen),
            "closed" => Ok(Status::Closed),
            other => Err(format!("unknown promoter status {other:?}")),
        }
    }
}

/// One promoter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoterNode {
    /// Id.
    pub id: String,
    /// Parent id; `None` for a root.
    pub parent: Option<String>,
    /// Grade; `None` for none.
    pub grade: Option<String>,
    /// Status.
    pub status: Status,
}

impl PromoterNode {
    /// True when the promoter earns.
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }
}

/// The part of the network one computation needs: referral promoters, the buyer's bound
/// promoter, and the upline of the primary promoter. Absent ids are unknown promoters.
#[derive(Debug, Clone, Default)]
pub struct NetworkSnapshot {
    /// Shared with the cache and with the attribution and chain that read them: a
    /// computation copies no node.
    nodes: HashMap<String, Arc<PromoterNode>, foldhash::fast::RandomState>,
    /// The promoter the buyer is bound to, if any.
    pub bound: Option<String>,
}

impl NetworkSnapshot {
    /// Adds a node.
    pub fn insert(&mut self, node: PromoterNode) {
        self.insert_shared(Arc::new(node));
    }

    /// Adds a node the cache already holds, without copying it.
    pub fn insert_shared(&mut self, node: Arc<PromoterNode>) {
        self.nodes.insert(node.id.clone(), node);
    }

    /// Looks a promoter up.
    pub fn get(&self, id: &str) -> Option<&Arc<PromoterNode>> {
        self.nodes.get(id)
    }

    /// True when the snapshot holds the promoter.
    pub fn contains(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }
}

/// The ancestors of `start` (nearest first) that `lookup` knows, at most `limit`.
/// Stops at a root, an unknown parent, or a repeated id (a cycle cannot be stored, but a
/// walk never trusts that).
pub fn upline<'a>(
    start: &PromoterNode,
    limit: usize,
    mut lookup: impl FnMut(&str) -> Option<&'a Arc<PromoterNode>>,
) -> Vec<&'a Arc<PromoterNode>> {
    let mut out: Vec<&Arc<PromoterNode>> = Vec::with_capacity(limit.min(16));
    let mut cur = start;
    while out.len() < limit {
        let Some(pid) = cur.parent.as_deref() else {
            break;
        };
        if same_id(pid, &start.id) || out.iter().any(|n| same_id(&n.id, pid)) {
            break;
        }
        let Some(p) = lookup(pid) else { break };
        out.push(p);
        cur = &**p;
    }
    out
}
