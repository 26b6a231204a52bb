//! `Endpoint`: a service plus what the balancer needs to know about it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::EndpointStats;

/// One endpoint as discovery hands it to [`Balance`](crate::Balance): the service that
/// reaches it, its relative weight, its zone, and the tags and metadata that subsets select
/// on.
///
/// ```
/// use waggle_balance::Endpoint;
/// let endpoint = Endpoint::new("a service").weight(3).zone("eu-west-1a").metadata("version", "v2");
/// assert_eq!(endpoint.get_weight(), 3);
/// ```
#[derive(Clone, Debug)]
pub struct Endpoint<S> {
    pub(crate) service: S,
    pub(crate) weight: u32,
    pub(crate) zone: Option<Arc<str>>,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) stats: Option<Arc<EndpointStats>>,
}

impl<S> Endpoint<S> {
    /// An endpoint of weight 1 with no zone, tags or metadata.
    pub fn new(service: S) -> Self {
        Endpoint { service, weight: 1, zone: None, tags: Vec::new(), metadata: BTreeMap::new(), stats: None }
    }

    /// Sets the relative weight. Weights are ratios: 99 / 1 / 1 sends about 97 % of the
    /// traffic to the first endpoint. A weight of 0 is raised to 1: an endpoint that must take
    /// no traffic should be removed or filtered out by a subset.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Sets the zone (availability zone, rack, data centre) for locality preference.
    pub fn zone(mut self, zone: impl Into<Arc<str>>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Adds a tag, for tag subsets.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a metadata pair, for metadata subsets (`version=v2`).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Shares `stats` with the balancer instead of letting it create fresh ones, so a layer
    /// inside the endpoint's service (an adaptive concurrency limiter) can publish its limit
    /// to the balancer.
    pub fn stats(mut self, stats: Arc<EndpointStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The same endpoint with its service transformed (wrapped in a layer, say).
    pub fn map_service<T>(self, f: impl FnOnce(S) -> T) -> Endpoint<T> {
        Endpoint {
            service: f(self.service),
            weight: self.weight,
            zone: self.zone,
            tags: self.tags,
            metadata: self.metadata,
            stats: self.stats,
        }
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The weight (at least 1).
    pub fn get_weight(&self) -> u32 {
        self.weight
    }

    /// The zone, if any.
    pub fn get_zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Whether the endpoint carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The metadata value under `key`.
    pub fn get_metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }
}
