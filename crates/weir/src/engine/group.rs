//! A model group: the deployments serving one public model name, how requests are spread over
//! them, and where the group hands over when it is exhausted.

use std::sync::Arc;

use super::deployment::Deployment;
use crate::{
    policy::retry::RetryBudget,
    route::balance::{Balancer, Candidate},
};

#[derive(Debug)]
pub(crate) struct Group {
    pub name: Arc<str>,
    pub wildcard: bool,
    pub deployments: Vec<Arc<Deployment>>,
    /// Orders the deployments for each request (strategy, weights, priority tiers).
    pub balancer: Balancer,
    /// Shared by the group's deployments, since retries move between them.
    pub retry_budget: RetryBudget,
    /// Indices (into the engine's groups) tried in order when this group is exhausted.
    pub fallbacks: Vec<usize>,
    /// Indices of larger-context groups for prompts this group's upstreams find too long.
    pub context_window_fallbacks: Vec<usize>,
}

impl Group {
    pub(crate) fn matches(&self, model: &str) -> bool {
        crate::config::model_matches(&self.name, model)
    }

    /// The deployments in the order this request should offer them: the balancer's, with the ones
    /// it already `tried` moved after the others (a stable sort, so each part keeps the order).
    pub(crate) fn order<'a>(&'a self, tried: &[Arc<Deployment>]) -> Vec<&'a Arc<Deployment>> {
        let candidates: Vec<Candidate<'_>> = self
            .deployments
            .iter()
            .map(|d| Candidate {
                weight: d.config.weight,
                priority: d.config.priority,
                load: d.load(),
            })
            .collect();
        let mut order: Vec<&Arc<Deployment>> = self
            .balancer
            .order(&candidates)
            .into_iter()
            .filter_map(|i| self.deployments.get(i))
            .collect();
        if !tried.is_empty() {
            order.sort_by_key(|d| tried.iter().any(|t| Arc::ptr_eq(t, d)));
        }
        order
    }

    /// A deployment by id (for manual control and health reports).
    pub(crate) fn find(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.deployments.iter().find(|d| d.id() == id)
    }

    /// The upstream's name for the model: the deployment's own, else the group's (so a fallback
    /// group gets its name, not the client's), else — for pattern groups — the client's.
    pub(crate) fn upstream_model(&self, deployment: &Deployment, requested: &Arc<str>) -> Arc<str> {
        match deployment.upstream_name() {
            Some(model) => model.clone(),
            None if self.wildcard => requested.clone(),
            None => self.name.clone(),
        }
    }
}
