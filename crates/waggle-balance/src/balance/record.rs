//! `PickRecord`: why a request went where it went.

use super::slot::Locality;

/// One pick, as reported to the observer set with
/// [`Builder::on_pick`](super::Builder::on_pick): for debugging ("why this endpoint?") and
/// metrics. Only built when an observer is set.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PickRecord<K> {
    /// The policy's name.
    pub policy: &'static str,
    /// The chosen endpoint.
    pub chosen: K,
    /// The candidates the policy compared, with the load it saw (load-aware policies only;
    /// empty for round robin, random and hashing).
    pub compared: Vec<RecordedCandidate<K>>,
    /// Whether the endpoint came from the local zone or spilled over.
    pub locality: Locality,
    /// Whether the balancer was in panic mode (too few healthy endpoints, balancing over all).
    pub panic: bool,
    /// 0 for the first pick of a request, higher when an endpoint failed to become ready and
    /// the request picked again.
    pub attempt: u32,
}

/// A candidate a policy compared.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecordedCandidate<K> {
    /// The endpoint.
    pub key: K,
    /// Its effective weight.
    pub weight: f64,
    /// The load the policy saw, divided by the weight (lower wins).
    pub load: f64,
}
