//! `BalanceLayer`: builds a [`Balance`] from a [`Discover`].

use std::fmt;

use tower::Layer;
use tower::discover::Discover;

use super::{Balance, Builder, EndpointDiscover, EndpointKey, EndpointService};
use crate::Endpoint;

/// A [`Layer`] that turns a [`Discover`] of [`Endpoint`]s into a [`Balance`] configured by a
/// [`Builder`].
pub struct BalanceLayer<K, Req> {
    builder: Builder<K, Req>,
}

impl<K, Req> BalanceLayer<K, Req> {
    /// A layer building balancers with `builder`'s settings.
    pub fn new(builder: Builder<K, Req>) -> Self {
        BalanceLayer { builder }
    }
}

impl<K, Req> Clone for BalanceLayer<K, Req> {
    fn clone(&self) -> Self {
        BalanceLayer { builder: self.builder.clone() }
    }
}

impl<K, Req> fmt::Debug for BalanceLayer<K, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer").field("builder", &self.builder).finish()
    }
}

impl<K, S, Req, D> Layer<D> for BalanceLayer<K, Req>
where
    K: EndpointKey,
    S: EndpointService<Req>,
    Req: Send + 'static,
    // Stated directly (not only through `EndpointDiscover`) so that it determines `S`.
    D: EndpointDiscover<K, S> + Discover<Service = Endpoint<S>>,
{
    type Service = Balance<K, S, Req>;

    fn layer(&self, discover: D) -> Self::Service {
        self.builder.clone().build(discover)
    }
}
