//! Instances: one reachable endpoint of a service.

use std::{fmt, str::FromStr};

use crate::{
    InstanceId, Metadata, Revision, ServiceName, SessionId, ValidationError, Zone, validate, validate::limits,
};

/// The health of an instance. Discovery returns `Passing` instances unless asked for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Healthy: receives traffic.
    #[default]
    Passing,
    /// Degraded but reachable.
    Warning,
    /// Failing: not returned by default discovery.
    Critical,
}

impl HealthStatus {
    /// The lowercase name used by the CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HealthStatus {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passing" => Ok(HealthStatus::Passing),
            "warning" => Ok(HealthStatus::Warning),
            "critical" => Ok(HealthStatus::Critical),
            _ => Err(ValidationError::new("status", format!("must be one of passing, warning, critical (got {s:?})"))),
        }
    }
}

/// What a client asks to register: everything about an instance except what the registry
/// assigns (owner session and revisions).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct InstanceSpec {
    /// The service this instance belongs to.
    pub service: ServiceName,
    /// Unique within the service; defaults to `ADDRESS:PORT`.
    pub id: InstanceId,
    /// IPv4/IPv6 literal or hostname.
    pub address: String,
    /// 1–65535.
    pub port: u16,
    /// Up to 64 tags of up to 255 bytes.
    pub tags: Vec<String>,
    /// Up to 64 pairs, 16 KiB in total.
    pub meta: Metadata,
    /// 1–10000, default 100.
    pub weight: u32,
    /// Optional locality zone.
    pub zone: Option<Zone>,
    /// Initial health status, default passing.
    pub status: HealthStatus,
}

impl InstanceSpec {
    /// Starts a spec for `service` at `address:port` with the default id, weight and status.
    /// Validates the service, address and port; the other fields are checked by
    /// [`InstanceSpec::validate`].
    pub fn new(service: &str, address: &str, port: u32) -> Result<Self, ValidationError> {
        let service = ServiceName::new(service)?;
        validate::check_address(address)?;
        let port = validate::check_port(port)?;
        let id = InstanceId::new(default_id(address, port))?;
        Ok(InstanceSpec {
            service,
            id,
            address: address.to_string(),
            port,
            tags: Vec::new(),
            meta: Metadata::new(),
            weight: limits::DEFAULT_WEIGHT,
            zone: None,
            status: HealthStatus::Passing,
        })
    }

    /// Sets an explicit instance id.
    pub fn with_id(mut self, id: &str) -> Result<Self, ValidationError> {
        self.id = InstanceId::new(id)?;
        Ok(self)
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a metadata pair.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the zone.
    pub fn with_zone(mut self, zone: &str) -> Result<Self, ValidationError> {
        self.zone = Some(Zone::new(zone)?);
        Ok(self)
    }

    /// Sets the health status.
    pub fn with_status(mut self, status: HealthStatus) -> Self {
        self.status = status;
        self
    }

    /// Checks a registration through Waggle's own API (SDK, gRPC, CLI): the model's rules,
    /// and a real port (1–65535). Port 0, "no port", exists only for Consul's agent API.
    pub fn validate_registration(&self) -> Result<(), ValidationError> {
        if self.port == 0 {
            return Err(ValidationError::new("port", "must be between 1 and 65535 (got 0)"));
        }
        self.validate()
    }

    /// Checks every field against the model's rules; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::check_address(&self.address)?;
        validate::check_port(u32::from(self.port))?;
        validate::check_tags(&self.tags)?;
        validate::check_meta(self.meta.iter())?;
        validate::check_weight(self.weight)?;
        Ok(())
    }
}

/// The default instance id: `ADDRESS:PORT`, with IPv6 literals bracketed.
pub fn default_id(address: &str, port: u16) -> String {
    if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
}

/// A registered instance as the registry stores and serves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// What the client registered.
    #[serde(flatten)]
    pub spec: InstanceSpec,
    /// The session that owns it; the instance ends with the session.
    pub session: SessionId,
    /// The revision that first registered it.
    pub create_revision: Revision,
    /// The revision that last changed it.
    pub modify_revision: Revision,
    /// Its health checks (agent registrations only); when there are any, `spec.status` is
    /// the worst of their statuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::Check>,
}

impl Instance {
    /// The service it belongs to.
    pub fn service(&self) -> &ServiceName {
        &self.spec.service
    }
    /// Its id within the service.
    pub fn id(&self) -> &InstanceId {
        &self.spec.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_and_validation() {
        let spec = InstanceSpec::new("web", "10.0.0.1", 8080).expect("valid");
        assert_eq!(spec.id.as_str(), "10.0.0.1:8080");
        assert_eq!(spec.weight, 100);
        assert_eq!(InstanceSpec::new("web", "::1", 80).expect("v6").id.as_str(), "[::1]:80");
        let portless = InstanceSpec::new("web", "10.0.0.1", 0).expect("port 0: no port (Consul's agent API)");
        assert_eq!(portless.validate_registration().expect_err("port").field, "port");
        assert_eq!(InstanceSpec::new("web", "10.0.0.1", 65_536).expect_err("port").field, "port");
        assert_eq!(InstanceSpec::new("Web", "10.0.0.1", 1).expect_err("name").field, "service");
        let heavy = spec.clone().with_weight(0);
        assert_eq!(heavy.validate().expect_err("weight").field, "weight");
        assert!(spec.with_tag("a").with_meta("k", "v").validate().is_ok());
        assert_eq!("bogus".parse::<HealthStatus>().expect_err("status").field, "status");
    }
}
