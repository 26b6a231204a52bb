//! Ring hash (Ketama-style consistent hashing) with weight-proportional virtual nodes.

use rand::rngs::SmallRng;

use super::sampler::Sampler;
use super::{Candidate, PickContext, Picker, Policy};
use crate::hash::mix64;

/// Consistent hashing on a ring: each candidate owns `virtual_nodes × weight` points on a
/// 64-bit ring, and a request goes to the owner of the first point at or after its hash.
/// Removing one of n endpoints moves only the keys it owned (≈ 1/n); adding one takes
/// ≈ 1/(n+1) from the others. Lookup is a binary search, O(log points).
///
/// Beyond `max_ring_size` points every endpoint's count is scaled down in proportion; then a
/// membership change also moves a few of the survivors' keys (about 1/n of them). Keep
/// weights small integers (1, 2, 3, …) for the tightest behaviour.
///
/// Requests without a hash key go to a weighted random endpoint.
#[derive(Clone, Copy, Debug)]
pub struct RingHash {
    virtual_nodes: u32,
    max_ring_size: usize,
}

impl Default for RingHash {
    fn default() -> Self {
        RingHash { virtual_nodes: 160, max_ring_size: 1 << 20 }
    }
}

impl RingHash {
    /// 160 virtual nodes per unit of weight (Dubbo's and Ketama's default), at most 2^20
    /// points in all.
    pub fn new() -> Self {
        Self::default()
    }

    /// Virtual nodes per unit of weight; at least 1. More nodes give a more even spread and a
    /// bigger, slower ring.
    pub fn virtual_nodes(mut self, virtual_nodes: u32) -> Self {
        self.virtual_nodes = virtual_nodes.max(1);
        self
    }

    /// Caps the ring's size; beyond it every endpoint's share of points is scaled down.
    pub fn max_ring_size(mut self, points: usize) -> Self {
        self.max_ring_size = points.max(1);
        self
    }
}

impl Policy for RingHash {
    fn name(&self) -> &'static str {
        "ring_hash"
    }

    fn is_consistent_hash(&self) -> bool {
        true
    }

    fn build(&self, candidates: &[Candidate], _rng: &mut SmallRng) -> Box<dyn Picker> {
        // Absolute units: an endpoint's points depend on its own weight only, so removing a
        // light endpoint does not reshape everyone else's share of the ring.
        let wanted: Vec<f64> = candidates.iter().map(|c| f64::from(self.virtual_nodes) * c.weight()).collect();
        let total: f64 = wanted.iter().sum();
        let scale = if total > self.max_ring_size as f64 { self.max_ring_size as f64 / total } else { 1.0 };
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total.min(self.max_ring_size as f64) as usize + 1);
        for (idx, (candidate, wanted)) in candidates.iter().zip(&wanted).enumerate() {
            let n_points = ((wanted * scale).round() as u64).max(1);
            for replica in 0..n_points {
                let point = mix64(candidate.hash_id() ^ mix64(replica.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                points.push((point, idx as u32));
            }
        }
        // Equal points (astronomically rare) are ordered by owner so every client agrees.
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip();
        Box::new(RingPicker { hashes, owners, fallback: Sampler::new(candidates) })
    }
}

#[derive(Debug)]
struct RingPicker {
    hashes: Vec<u64>,
    owners: Vec<u32>,
    fallback: Sampler,
}

impl Picker for RingPicker {
    fn pick(&self, cx: &mut PickContext<'_>) -> usize {
        let Some(hash) = cx.request_hash() else {
            return self.fallback.sample(cx.rng());
        };
        let at = self.hashes.partition_point(|point| *point < hash);
        self.owners.get(at).or(self.owners.first()).map_or(0, |owner| *owner as usize)
    }
}
