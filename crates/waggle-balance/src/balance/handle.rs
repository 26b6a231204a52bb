//! `Handle`: a cheap, cloneable view into a running balancer — introspection and manual
//! ejection.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::error::Closed;
use super::state::EndpointState;

pub(crate) enum Control<K> {
    Snapshot(oneshot::Sender<Vec<EndpointSnapshot<K>>>),
    Eject { key: K, duration: Option<Duration> },
    Restore { key: K },
}

/// Controls and inspects the balancer it came from ([`Balance::handle`](super::Balance::handle)).
#[derive(Debug)]
pub struct Handle<K> {
    pub(crate) control: mpsc::UnboundedSender<Control<K>>,
}

impl<K> Clone for Handle<K> {
    fn clone(&self) -> Self {
        Handle { control: self.control.clone() }
    }
}

impl<K> Handle<K> {
    /// Every endpoint with its state, weights and load.
    pub async fn endpoints(&self) -> Result<Vec<EndpointSnapshot<K>>, Closed> {
        let (reply, answer) = oneshot::channel();
        self.control.send(Control::Snapshot(reply)).map_err(|_| Closed)?;
        answer.await.map_err(|_| Closed)
    }

    /// Ejects an endpoint: for `duration`, or for its next back-off when `None`. After that it
    /// returns on probation. Outlier detectors and operators use this; unknown keys are
    /// ignored.
    pub fn eject(&self, key: K, duration: Option<Duration>) -> Result<(), Closed> {
        self.control.send(Control::Eject { key, duration }).map_err(|_| Closed)
    }

    /// Makes an ejected, probation or connecting endpoint ready at once.
    pub fn restore(&self, key: K) -> Result<(), Closed> {
        self.control.send(Control::Restore { key }).map_err(|_| Closed)
    }
}

/// One endpoint as [`Handle::endpoints`] reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointSnapshot<K> {
    /// The discovery key.
    pub key: K,
    /// Its life-cycle state.
    pub state: EndpointState,
    /// Its configured weight.
    pub weight: u32,
    /// Its weight in the current routing table after slow start; 0 when it takes no traffic.
    pub effective_weight: f64,
    /// Its zone.
    pub zone: Option<String>,
    /// Requests in flight.
    pub in_flight: u32,
    /// Successful responses.
    pub successes: u64,
    /// Failed responses.
    pub failures: u64,
    /// Its peak-EWMA latency estimate, when the policy tracks latency ([`PeakEwma`](crate::policy::PeakEwma)).
    pub latency: Option<Duration>,
    /// How many times it has been ejected.
    pub ejections: u64,
    /// While ejected: time until probation.
    pub retry_in: Option<Duration>,
    /// Why it was last ejected.
    pub last_error: Option<String>,
}
