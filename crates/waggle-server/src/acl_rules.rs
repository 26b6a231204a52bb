//! TEMPORARY (branch acl): replaced by the HCL / JSON rules parser.

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RulesError(String);

pub(crate) fn parse_rules(text: &str) -> Result<waggle_core::acl::Rules, RulesError> {
    if text.trim().is_empty() { Ok(waggle_core::acl::Rules::new()) } else { Err(RulesError("not yet".into())) }
}
