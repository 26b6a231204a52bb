//! `Slot`: one endpoint as requests see it — its service, identity and live counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use crate::{Endpoint, EndpointStats};

/// Whether an endpoint is in the balancer's local zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    /// In the local zone, or the balancer is not zone-aware.
    Local,
    /// In another zone (or in none, when the balancer is zone-aware).
    Remote,
}

/// Requests in flight per locality, for the zone overload rule. Shared by every table so it
/// survives rebuilds.
#[derive(Debug, Default)]
pub(crate) struct ZoneLoad {
    in_flight: [AtomicU32; 2],
}

impl ZoneLoad {
    pub(crate) fn in_flight(&self, locality: Locality) -> u32 {
        self.in_flight[locality as usize].load(Relaxed)
    }
}

/// An endpoint shared by the worker, the routing tables and in-flight requests. Replaced (not
/// mutated) when discovery updates the endpoint; the replacement keeps the same stats.
#[derive(Debug)]
pub(crate) struct Slot<K, S> {
    pub(crate) key: K,
    pub(crate) endpoint: Endpoint<S>,
    pub(crate) hash_id: u64,
    pub(crate) stats: Arc<EndpointStats>,
    pub(crate) locality: Locality,
    pub(crate) zone_load: Option<Arc<ZoneLoad>>,
    /// Set once discovery removes (or replaces) the endpoint: a request that picked it from an
    /// older table picks again instead of calling it.
    pub(crate) removed: AtomicBool,
    /// Set while on probation: responses report their outcome to the worker.
    pub(crate) probing: AtomicBool,
    /// Set by a request that reported this endpoint failing, so picks avoid it until the
    /// worker has ejected it; cleared when it is admitted again.
    pub(crate) suspect: AtomicBool,
}

impl<K, S> Slot<K, S> {
    pub(crate) fn start(&self) {
        self.stats.start();
        if let Some(zones) = &self.zone_load {
            zones.in_flight[self.locality as usize].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn finish(&self) {
        self.stats.finish();
        if let Some(zones) = &self.zone_load {
            zones.in_flight[self.locality as usize].fetch_sub(1, Relaxed);
        }
    }

    pub(crate) fn report_failing(&self) {
        self.suspect.store(true, Relaxed);
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }
}
