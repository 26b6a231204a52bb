//! The `waggle.v1.Lock` service: acquire (try, or wait in FIFO order up to a deadline),
//! release, proclaim, inspect and observe. The waiting is the node's (`node/locks.rs`); this
//! file parses and renders.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use tonic::{Request, Response, Status};
use waggle_core::{
    LockState, Revision, SessionId,
    acl::{Access, Resource},
};
use waggle_proto::v1::{self, lock_server::Lock};

use super::status::{caller, token_of, while_authorized};
use crate::node::{Acquire, Node, NodeError};

pub(crate) struct LockService {
    pub(crate) node: Arc<Node>,
}

fn status(revision: Revision, state: Option<&LockState>) -> v1::LockStatus {
    v1::LockStatus {
        revision: revision.get(),
        limit: state.map_or(0, |s| s.limit),
        holders: state
            .iter()
            .flat_map(|s| &s.holders)
            .map(|h| v1::LockHolder { session_id: h.session.get(), token: h.token, value: h.value.to_vec() })
            .collect(),
        waiters: state.iter().flat_map(|s| &s.waiters).map(|w| w.session.get()).collect(),
    }
}

fn invalid_lock(e: waggle_core::ValidationError) -> Status {
    Status::invalid_argument(format!("invalid lock: {e}"))
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn acquire(&self, request: Request<v1::AcquireRequest>) -> Result<Response<v1::AcquireResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.into_inner();
        if req.session_id == 0 {
            return Err(NodeError::Invalid("invalid request: session_id is required".into()).into());
        }
        let grant = self
            .node
            .acquire(
                &caller,
                Acquire {
                    name: req.name,
                    session: SessionId::new(req.session_id),
                    limit: req.limit,
                    wait: Duration::from_millis(req.wait_ms),
                    keep_waiting: req.keep_waiting,
                    value: req.value,
                },
            )
            .await?;
        Ok(Response::new(v1::AcquireResponse {
            acquired: grant.token.is_some(),
            token: grant.token.unwrap_or(0),
            revision: grant.revision.get(),
        }))
    }

    async fn release(&self, request: Request<v1::ReleaseRequest>) -> Result<Response<v1::ReleaseResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.into_inner();
        let revision = self.node.release(&caller, req.name, SessionId::new(req.session_id)).await?;
        Ok(Response::new(v1::ReleaseResponse { revision: revision.get() }))
    }

    async fn proclaim(&self, request: Request<v1::ProclaimRequest>) -> Result<Response<v1::ReleaseResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.into_inner();
        let revision =
            self.node.proclaim(&caller, req.name, SessionId::new(req.session_id), req.token, req.value).await?;
        Ok(Response::new(v1::ReleaseResponse { revision: revision.get() }))
    }

    async fn inspect(&self, request: Request<v1::InspectRequest>) -> Result<Response<v1::LockStatus>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let name = &request.get_ref().name;
        waggle_core::check_key(name).map_err(invalid_lock)?;
        caller.check(Resource::Key, name, Access::Read)?;
        let (revision, state) = self.node.read_model().lock(name);
        Ok(Response::new(status(revision, state.as_deref())))
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<v1::LockStatus, Status>> + Send>>;

    async fn observe(&self, request: Request<v1::InspectRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let name = request.into_inner().name;
        waggle_core::check_key(&name).map_err(invalid_lock)?;
        caller.check(Resource::Key, &name, Access::Read)?;
        let read_model = self.node.read_model().clone();
        let shutdown = self.node.shutdown_token().clone();
        // The state now, then whenever it changes (compared by value: other writes move the
        // revision without touching this lock).
        let signal = read_model.lock_signal(&name);
        let start = (read_model, name, shutdown, signal, None::<Option<Arc<LockState>>>);
        let stream = futures_util::stream::unfold(start, |(read_model, name, shutdown, mut signal, last)| async move {
            loop {
                let (revision, state) = read_model.lock(&name);
                if last.as_ref() != Some(&state) {
                    let message = status(revision, state.as_deref());
                    return Some((Ok(message), (read_model, name, shutdown, signal, Some(state))));
                }
                tokio::select! {
                    changed = signal.changed() => if changed.is_err() { return None },
                    () = shutdown.cancelled() => return None,
                }
            }
        });
        Ok(Response::new(while_authorized(Box::pin(stream), self.node.clone(), caller)))
    }
}
