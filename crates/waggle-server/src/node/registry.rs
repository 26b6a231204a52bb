//! Registration use cases: instances of SDK sessions and of the agent (Consul's API), their
//! checks, and TTL check reports.

use std::sync::Arc;

use waggle_core::{
    CheckSpec, Command, HealthStatus, Instance, InstanceId, InstanceSpec, Revision, ServiceName, SessionId,
};

use super::{Caller, Node, NodeError};
use crate::{
    leader::{Report, ReportFailure},
    state::checks::ReportError,
};

impl Node {
    /// Registers (or replaces) an instance owned by `session`: the revision, and the instance
    /// as stored.
    pub(crate) async fn register(
        &self,
        caller: &Caller,
        session: SessionId,
        spec: InstanceSpec,
    ) -> Result<(Revision, Option<Arc<Instance>>), NodeError> {
        let (service, id) = (spec.service.clone(), spec.id.clone());
        let applied = self.write(caller, Command::Register { session, spec }).await?;
        let (_, instances, _) = self.read_model().service(&service);
        Ok((applied.revision(), instances.get(&id).cloned()))
    }

    /// Registers (or replaces) an instance of the agent's, which lives until deregistered, with
    /// its checks.
    pub(crate) async fn register_agent(
        &self,
        caller: &Caller,
        spec: InstanceSpec,
        checks: Vec<CheckSpec>,
    ) -> Result<Revision, NodeError> {
        Ok(self.write(caller, Command::AgentRegister { spec, checks }).await?.revision())
    }

    /// Removes an instance now.
    pub(crate) async fn deregister(
        &self,
        caller: &Caller,
        service: ServiceName,
        id: InstanceId,
    ) -> Result<Revision, NodeError> {
        Ok(self.write(caller, Command::Deregister { service, id }).await?.revision())
    }

    /// Adds (or replaces) a check of an instance.
    pub(crate) async fn put_check(
        &self,
        caller: &Caller,
        service: ServiceName,
        id: InstanceId,
        check: CheckSpec,
    ) -> Result<Revision, NodeError> {
        Ok(self.write(caller, Command::PutCheck { service, id, check }).await?.revision())
    }

    /// Removes a check of an instance.
    pub(crate) async fn remove_check(
        &self,
        caller: &Caller,
        service: ServiceName,
        id: InstanceId,
        check: String,
    ) -> Result<Revision, NodeError> {
        Ok(self.write(caller, Command::RemoveCheck { service, id, check }).await?.revision())
    }

    /// A TTL check report (`pass`, `warn`, `fail`, `update`): taken by the leader, which renews
    /// the check's deadline and writes the status if it changed; answers once that write is
    /// applied here. An unknown check is `NotFound`, a check without a TTL `Invalid`.
    pub(crate) async fn report_check(
        &self,
        caller: &Caller,
        check: String,
        status: HealthStatus,
        output: String,
    ) -> Result<(), NodeError> {
        // Consul: a TTL report needs write on the check's service.
        if let Some(info) = self.checks().get(&check) {
            caller.check(
                waggle_core::acl::Resource::Service,
                info.service.as_str(),
                waggle_core::acl::Access::Write,
            )?;
        }
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
