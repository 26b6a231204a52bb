//! Conversions between wire messages and core types.

use waggle_core::{HealthStatus, Instance, InstanceSpec, Revision, SessionId, ValidationError};

use crate::v1;

/// A core instance as a wire message.
pub fn instance_from_core(i: &Instance) -> v1::Instance {
    v1::Instance {
        service: i.spec.service.to_string(),
        id: i.spec.id.to_string(),
        address: i.spec.address.clone(),
        port: u32::from(i.spec.port),
        tags: i.spec.tags.clone(),
        meta: i.spec.meta.clone().into_iter().collect(),
        weight: Some(i.spec.weight),
        zone: i.spec.zone.as_ref().map(|z| z.to_string()).unwrap_or_default(),
        status: status_from_core(i.spec.status) as i32,
        session_id: i.session.get(),
        create_revision: i.create_revision.get(),
        modify_revision: i.modify_revision.get(),
    }
}

/// A wire instance as a validated spec (defaults applied: id, weight, status).
pub fn spec_from_wire(w: &v1::Instance) -> Result<InstanceSpec, ValidationError> {
    let mut spec = InstanceSpec::new(&w.service, &w.address, w.port)?;
    if !w.id.is_empty() {
        spec = spec.with_id(&w.id)?;
    }
    if !w.zone.is_empty() {
        spec = spec.with_zone(&w.zone)?;
    }
    if let Some(weight) = w.weight {
        spec = spec.with_weight(weight);
    }
    // Built in one go (sorted once, not inserted pair by pair): a request may carry millions
    // of pairs, which `validate` below then refuses.
    spec.tags = w.tags.clone();
    spec.meta = w.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let status = v1::HealthStatus::try_from(w.status).map_err(|_| {
        ValidationError::new("status", format!("must be passing, warning or critical (got {})", w.status))
    })?;
    spec = spec.with_status(status_to_core(status));
    spec.validate()?;
    Ok(spec)
}

/// A wire instance as the server stored it, validated like [`spec_from_wire`] (its owner
/// session and revisions as sent; checks are not on the wire).
pub fn instance_from_wire(w: &v1::Instance) -> Result<Instance, ValidationError> {
    Ok(Instance {
        spec: spec_from_wire(w)?,
        session: SessionId::new(w.session_id),
        create_revision: Revision::new(w.create_revision),
        modify_revision: Revision::new(w.modify_revision),
        checks: Vec::new(),
    })
}

/// A core status as a wire enum.
pub fn status_from_core(s: HealthStatus) -> v1::HealthStatus {
    match s {
        HealthStatus::Passing => v1::HealthStatus::Passing,
        HealthStatus::Warning => v1::HealthStatus::Warning,
        HealthStatus::Critical => v1::HealthStatus::Critical,
    }
}

/// A wire status as a core status; unspecified means passing.
pub fn status_to_core(s: v1::HealthStatus) -> HealthStatus {
    match s {
        v1::HealthStatus::Unspecified | v1::HealthStatus::Passing => HealthStatus::Passing,
        v1::HealthStatus::Warning => HealthStatus::Warning,
        v1::HealthStatus::Critical => HealthStatus::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_collections_are_refused_quickly() {
        let base = v1::Instance { service: "web".into(), address: "10.0.0.1".into(), port: 80, ..Default::default() };
        let many_meta =
            v1::Instance { meta: (0..200_000).map(|i| (format!("k{i}"), String::new())).collect(), ..base.clone() };
        assert_eq!(spec_from_wire(&many_meta).expect_err("meta").field, "meta");
        let many_tags = v1::Instance { tags: vec!["t".into(); 65], ..base.clone() };
        assert_eq!(spec_from_wire(&many_tags).expect_err("tags").field, "tags");
        let ok = v1::Instance { meta: [("b".into(), "2".into()), ("a".into(), "1".into())].into(), ..base };
        let spec = spec_from_wire(&ok).expect("valid");
        assert_eq!(spec.meta.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn instances_round_trip_and_are_validated() {
        let spec = InstanceSpec::new("web", "10.0.0.1", 8080).expect("valid").with_weight(50);
        let instance = Instance {
            spec,
            session: SessionId::new(7),
            create_revision: Revision::new(3),
            modify_revision: Revision::new(5),
            checks: Vec::new(),
        };
        assert_eq!(instance_from_wire(&instance_from_core(&instance)).expect("valid"), instance);
        let bad = v1::Instance { port: 70_000, ..instance_from_core(&instance) };
        assert_eq!(instance_from_wire(&bad).expect_err("port 70000").field, "port");
    }
}
