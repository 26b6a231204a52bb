//! Registration use cases: instances of SDK sessions and of the agent (Consul's API), their
//! checks, and TTL check reports.

use std::sync::Arc;

use waggle_core::{
    CheckSpec, Command, HealthStatus, Instance, InstanceId, InstanceSpec, Revision, ServiceName, SessionId,
};

use super::{Node, NodeError};
use crate::{
    leader::{Report, ReportFailure},
    state::checks::ReportError,
};

impl Node {
    /// Registers (or replaces) an instance owned by `session`: the revision, and the instance
    /// as stored.
    pub(crate) async fn register(
        &self,
        session: SessionId,
        spec: InstanceSpec,
    ) -> Result<(Revision, Option<Arc<Instance>>), NodeError> {
        let (service, id) = (spec.service.clone(), spec.id.clone());
        let applied = self.write(Command::Register { session, spec }).await?;
        let (_, instances, _) = self.read_model().service(&service);
        Ok((applied.revision(), instances.get(&id).cloned()))
    }

    /// Registers (or replaces) an instance of the agent's, which lives until deregistered, with
    /// its checks.
    pub(crate) async fn register_agent(
        &self,
        spec: InstanceSpec,
        checks: Vec<CheckSpec>,
    ) -> Result<Revision, NodeError> {
        Ok(self.write(Command::AgentRegister { spec, checks }).await?.revision())
    }

    /// Removes an instance now.
    pub(crate) async fn deregister(&self, service: ServiceName, id: InstanceId) -> Result<Revision, NodeError> {
        Ok(self.write(Command::Deregister { service, id }).await?.revision())
    }

    /// Adds (or replaces) a check of an instance.
    pub(crate) async fn put_check(
        &self,
        service: ServiceName,
        id: InstanceId,
        check: CheckSpec,
    ) -> Result<Revision, NodeError> {
        Ok(self.write(Command::PutCheck { service, id, check }).await?.revision())
    }

    /// Removes a check of an instance.
    pub(crate) async fn remove_check(
        &self,
        service: ServiceName,
        id: InstanceId,
        check: String,
    ) -> Result<Revision, NodeError> {
        Ok(self.write(Command::RemoveCheck { service, id, check }).await?.revision())
    }

    /// A TTL check report (`pass`, `warn`, `fail`, `update`): taken by the leader, which renews
    /// the check's deadline and writes the status if it changed; answers once that write is
    /// applied here. An unknown check is `NotFound`, a check without a TTL `Invalid`.
    pub(crate) async fn report_check(
        &self,
        check: String,
        status: HealthStatus,
        output: String,
    ) -> Result<(), NodeError> {
        match self.leader.report_check(Report { check, status, output }).await {
            Ok(()) => Ok(()),
            Err(ReportFailure::Check(ReportError::Unknown)) => Err(NodeError::NotFound("unknown check ID".into())),
            Err(ReportFailure::Check(ReportError::NotTtl)) => {
                Err(NodeError::Invalid("the check is not a TTL check".into()))
            }
            Err(ReportFailure::Propose(e)) => Err(e.into()),
        }
    }
}
