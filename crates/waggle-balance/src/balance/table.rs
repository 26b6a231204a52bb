//! The routing table: an immutable snapshot of which endpoints take traffic, with what
//! weights, split into local and remote tiers, and the pickers built for them.
//!
//! The worker rebuilds it whenever endpoints, their states or slow-start weights change and
//! publishes it with one atomic swap; every request reads it without a lock. Building is a
//! pure function of the endpoints, their life cycles, the configuration and the time.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::config::{Fallback, SlowStart, Subset, ZoneAware};
use super::slot::{Locality, Slot, ZoneLoad};
use super::state::{EndpointState, Lifecycle};
use crate::policy::{Candidate, PickContext, Picker, Policy};

/// The configuration a table is built from.
#[derive(Clone, Debug)]
pub(crate) struct TableConfig {
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) panic_threshold: f64,
    pub(crate) zone: Option<ZoneAware>,
    pub(crate) slow_start: Option<SlowStart>,
    pub(crate) subset: Option<Subset>,
}

impl TableConfig {
    /// An endpoint's weight at `now`, after slow start.
    pub(crate) fn effective_weight<S>(&self, endpoint: &crate::Endpoint<S>, life: &Lifecycle, now: Instant) -> f64 {
        let weight = f64::from(endpoint.weight);
        match (&self.slow_start, life.state.is_healthy(), life.ready_since) {
            (Some(slow_start), true, Some(since)) if !self.policy.is_consistent_hash() => {
                weight * slow_start.factor(now.saturating_duration_since(since))
            }
            _ => weight,
        }
    }

    /// When the next slow-start step is due, if any endpoint is still warming up: the worker
    /// rebuilds the table at that time so weights follow the curve in 20 steps per window.
    pub(crate) fn next_warmup_step<'a>(
        &self,
        lives: impl Iterator<Item = &'a Lifecycle>,
        now: Instant,
    ) -> Option<Instant> {
        let slow_start = self.slow_start.as_ref().filter(|_| !self.policy.is_consistent_hash())?;
        let warming = lives
            .filter_map(|l| l.ready_since.filter(|_| l.state.is_healthy()))
            .any(|since| now.saturating_duration_since(since) < slow_start.window);
        let step = (slow_start.window / 20).max(Duration::from_millis(10));
        warming.then(|| super::state::later(now, step))
    }
}

/// A slot with its effective weight.
type Weighted<K, S> = (Arc<Slot<K, S>>, f64);

pub(crate) struct Tier<K, S> {
    pub(crate) slots: Vec<Arc<Slot<K, S>>>,
    pub(crate) candidates: Vec<Candidate>,
    picker: Option<Box<dyn Picker>>,
    weight: f64,
}

impl<K, S> Tier<K, S> {
    fn build(entries: Vec<Weighted<K, S>>, policy: &dyn Policy, rng: &mut SmallRng) -> Self {
        let weight = entries.iter().map(|(_, w)| w).sum();
        let candidates: Vec<Candidate> =
            entries.iter().map(|(slot, w)| Candidate::new(*w, slot.hash_id, slot.stats.clone())).collect();
        let picker = (!candidates.is_empty()).then(|| policy.build(&candidates, rng));
        let slots = entries.into_iter().map(|(slot, _)| slot).collect();
        Tier { slots, candidates, picker, weight }
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Why the table contains what it contains, for pick records and introspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Normal,
    /// Fewer healthy endpoints than the panic threshold: balancing over all of them.
    Panic,
}

pub(crate) struct Table<K, S> {
    /// `[local, remote]`; without zone awareness everything is local.
    pub(crate) tiers: [Tier<K, S>; 2],
    local_share: f64,
    overload: Option<(f64, Arc<ZoneLoad>)>,
    pub(crate) mode: Mode,
}

/// One pick's result: the chosen slot, and the tier it came from.
pub(crate) struct Picked<'a, K, S> {
    pub(crate) slot: &'a Arc<Slot<K, S>>,
    pub(crate) locality: Locality,
}

impl<K, S> Table<K, S> {
    pub(crate) fn empty() -> Self {
        let tier = || Tier { slots: Vec::new(), candidates: Vec::new(), picker: None, weight: 0.0 };
        Table { tiers: [tier(), tier()], local_share: 1.0, overload: None, mode: Mode::Normal }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tiers.iter().all(Tier::is_empty)
    }

    pub(crate) fn len(&self) -> usize {
        self.tiers.iter().map(|t| t.slots.len()).sum()
    }

    /// Builds the table for `entries` at `now`.
    pub(crate) fn build<'a>(
        entries: impl Iterator<Item = (&'a Arc<Slot<K, S>>, &'a Lifecycle)> + Clone,
        config: &TableConfig,
        zone_load: Option<&Arc<ZoneLoad>>,
        now: Instant,
        rng: &mut SmallRng,
    ) -> Self
    where
        K: 'a,
        S: 'a,
    {
        let in_subset: Vec<(&Arc<Slot<K, S>>, &Lifecycle)> = match &config.subset {
            None => entries.collect(),
            Some(Subset { selector, fallback }) => {
                let matching: Vec<_> = entries.clone().filter(|(s, _)| selector.matches(&s.endpoint)).collect();
                match fallback {
                    _ if !matching.is_empty() => matching,
                    Fallback::AnyEndpoint => entries.collect(),
                    Fallback::Subset(other) => entries.filter(|(s, _)| other.matches(&s.endpoint)).collect(),
                    Fallback::NoEndpoint => Vec::new(),
                }
            }
        };

        // Connecting endpoints have not shown whether they work: they count neither way.
        let known = in_subset.iter().filter(|(_, l)| l.state != EndpointState::Connecting).count();
        let healthy = in_subset.iter().filter(|(_, l)| l.state.is_healthy()).count();
        if known == 0 {
            return Self::empty();
        }
        let mode = if (healthy as f64) < config.panic_threshold * known as f64 { Mode::Panic } else { Mode::Normal };
        // In panic mode every endpoint that has shown whether it works takes traffic; still
        // connecting ones never do.
        let eligible = in_subset.iter().filter(|(_, l)| match mode {
            Mode::Panic => l.state != EndpointState::Connecting,
            Mode::Normal => l.state.is_healthy(),
        });

        let mut tiers: [Vec<Weighted<K, S>>; 2] = [Vec::new(), Vec::new()];
        for (slot, life) in eligible {
            let weight = config.effective_weight(&slot.endpoint, life, now);
            tiers[slot.locality as usize].push(((*slot).clone(), weight));
        }

        let local_share = match &config.zone {
            None => 1.0,
            Some(zone) => {
                let count = |locality: Locality, healthy_only: bool| {
                    let counted = |l: &Lifecycle| {
                        if healthy_only { l.state.is_healthy() } else { l.state != EndpointState::Connecting }
                    };
                    in_subset.iter().filter(|(s, l)| s.locality == locality && counted(l)).count() as f64
                };
                match mode {
                    // Panic: no preference, spread over every endpoint.
                    Mode::Panic => count(Locality::Local, false) / known as f64,
                    // Envoy's priority loads: each zone's health, overprovisioned and capped,
                    // local first, the rest spilled, normalised when the total is below 1.
                    Mode::Normal => {
                        let health = |locality| {
                            let known = count(locality, false);
                            if known == 0.0 {
                                0.0
                            } else {
                                (zone.overprovisioning * count(locality, true) / known).min(1.0)
                            }
                        };
                        let (local, remote) = (health(Locality::Local), health(Locality::Remote));
                        let spilled = (1.0 - local).min(remote);
                        if local + spilled > 0.0 { local / (local + spilled) } else { 0.0 }
                    }
                }
            }
        };
        let overload = config.zone.as_ref().and_then(|z| z.overload_factor).zip(zone_load.cloned());
        let [local, remote] = tiers;
        let policy = config.policy.as_ref();
        Table {
            tiers: [Tier::build(local, policy, rng), Tier::build(remote, policy, rng)],
            local_share,
            overload,
            mode,
        }
    }

    /// Chooses the tier for one request: local unless it is empty, unhealthy enough to spill
    /// this request, or overloaded.
    fn choose_tier(&self, rng: &mut SmallRng) -> Locality {
        let [local, remote] = &self.tiers;
        if remote.is_empty() {
            return Locality::Local;
        }
        if local.is_empty() || crate::rng::unit(rng) >= self.local_share {
            return Locality::Remote;
        }
        if let Some((factor, load)) = &self.overload {
            let local_load = f64::from(load.in_flight(Locality::Local)) / local.weight;
            let remote_load = f64::from(load.in_flight(Locality::Remote)) / remote.weight;
            if local_load >= 1.0 && local_load > factor * remote_load {
                return Locality::Remote;
            }
        }
        Locality::Local
    }

    /// A random endpoint not matching `excluded` (and not suspect), local tier first. O(n):
    /// only for the rare pick the policy could not steer off excluded endpoints.
    pub(crate) fn any_except(
        &self,
        excluded: impl Fn(&Slot<K, S>) -> bool,
        rng: &mut SmallRng,
    ) -> Option<Picked<'_, K, S>> {
        self.tiers.iter().zip([Locality::Local, Locality::Remote]).find_map(|(tier, locality)| {
            let open: Vec<&Arc<Slot<K, S>>> = tier
                .slots
                .iter()
                .filter(|s| !excluded(s) && !s.suspect.load(std::sync::atomic::Ordering::Relaxed))
                .collect();
            let slot = open.get(crate::rng::below(rng, open.len().max(1)))?;
            Some(Picked { slot, locality })
        })
    }

    /// Picks an endpoint, or `None` if the table is empty.
    pub(crate) fn pick(
        &self,
        rng: &mut SmallRng,
        now: Duration,
        request_hash: Option<u64>,
        record: Option<&mut Vec<(usize, f64)>>,
    ) -> Option<Picked<'_, K, S>> {
        let locality = self.choose_tier(rng);
        let tier = &self.tiers[locality as usize];
        let picker = tier.picker.as_ref()?;
        let mut cx = PickContext::new(&tier.candidates, rng, now).with_request_hash(request_hash);
        if let Some(record) = record {
            cx = cx.with_record(record);
        }
        let idx = picker.pick(&mut cx);
        tier.slots.get(idx).map(|slot| Picked { slot, locality })
    }
}
