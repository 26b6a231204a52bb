//! Field rules shared by the model: addresses, tags, metadata, weights.

use crate::ValidationError;

/// The model's numeric limits, in one place so docs, API and tests agree.
pub mod limits {
    /// Longest service name (a DNS label).
    pub const MAX_SERVICE_NAME: usize = 63;
    /// Longest instance id, in bytes.
    pub const MAX_INSTANCE_ID: usize = 128;
    /// Longest zone name.
    pub const MAX_ZONE: usize = 64;
    /// Most tags per instance.
    pub const MAX_TAGS: usize = 64;
    /// Longest tag, in bytes.
    pub const MAX_TAG_BYTES: usize = 255;
    /// Most metadata pairs per instance.
    pub const MAX_META_PAIRS: usize = 64;
    /// Longest metadata key, in bytes.
    pub const MAX_META_KEY: usize = 128;
    /// Total size of an instance's metadata (keys plus values), in bytes.
    pub const MAX_META_BYTES: usize = 16 * 1024;
    /// Smallest weight.
    pub const MIN_WEIGHT: u32 = 1;
    /// Largest weight.
    pub const MAX_WEIGHT: u32 = 10_000;
    /// Default weight.
    pub const DEFAULT_WEIGHT: u32 = 100;
    /// Shortest session TTL (1 s).
    pub const MIN_TTL_MS: u64 = 1_000;
    /// Longest session TTL (24 h).
    pub const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1_000;
    /// Longest hostname (RFC 1123).
    pub const MAX_HOSTNAME: usize = 253;
}

pub(crate) fn check_address(s: &str) -> Result<(), ValidationError> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let err = || {
        ValidationError::new("address", format!("must be an IPv4 or IPv6 literal or a hostname (RFC 1123) (got {s:?})"))
    };
    let host = s.strip_suffix('.').unwrap_or(s);
    if host.is_empty() || host.len() > limits::MAX_HOSTNAME {
        return Err(err());
    }
    let all_numeric = host.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if all_numeric {
        // Looks like a malformed IPv4 literal such as 10.0.0.300: not a hostname either.
        return Err(err());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(err());
        }
    }
    Ok(())
}

/// A port: 0–65535, where 0 means "no port" (Consul's port-less services; the native API
/// refuses it, see [`crate::InstanceSpec::validate_registration`]).
pub(crate) fn check_port(port: u32) -> Result<u16, ValidationError> {
    u16::try_from(port).map_err(|_| ValidationError::new("port", format!("must be between 1 and 65535 (got {port})")))
}

pub(crate) fn check_weight(weight: u32) -> Result<(), ValidationError> {
    if (limits::MIN_WEIGHT..=limits::MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "weight",
            format!("must be between {} and {} (got {weight})", limits::MIN_WEIGHT, limits::MAX_WEIGHT),
        ))
    }
}

pub(crate) fn check_tags(tags: &[String]) -> Result<(), ValidationError> {
    if tags.len() > limits::MAX_TAGS {
        return Err(ValidationError::new(
            "tags",
            format!("at most {} tags are allowed (got {})", limits::MAX_TAGS, tags.len()),
        ));
    }
    for tag in tags {
        if tag.is_empty() || tag.len() > limits::MAX_TAG_BYTES || tag.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "tags",
                format!(
                    "each tag must be 1-{} bytes without control characters (got {:?})",
                    limits::MAX_TAG_BYTES,
                    truncate(tag)
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_meta<'a>(
    pairs: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ValidationError> {
    let n = pairs.len();
    if n > limits::MAX_META_PAIRS {
        return Err(ValidationError::new(
            "meta",
            format!("at most {} pairs are allowed (got {n})", limits::MAX_META_PAIRS),
        ));
    }
    let mut total = 0usize;
    for (k, v) in pairs {
        let key_ok = !k.is_empty()
            && k.len() <= limits::MAX_META_KEY
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !key_ok {
            return Err(ValidationError::new(
                "meta",
                format!(
                    "keys must be 1-{} characters of A-Z, a-z, 0-9, '_', '.', '-' (got {:?})",
                    limits::MAX_META_KEY,
                    truncate(k)
                ),
            ));
        }
        if v.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ValidationError::new("meta", format!("value of {k:?} contains control characters")));
        }
        total += k.len() + v.len();
    }
    if total > limits::MAX_META_BYTES {
        return Err(ValidationError::new(
            "meta",
            format!("keys and values must total at most {} bytes (got {total})", limits::MAX_META_BYTES),
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn addresses() {
        for ok in ["10.0.0.1", "::1", "fe80::1", "db-1.internal", "localhost", "a.b.c.", "x1"] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for bad in ["", "10.0.0.300", "-host", "host-", "a..b", "under_score", "a b", "[::1]", "1.2.3"] {
            assert_eq!(check_address(bad).expect_err(bad).field, "address", "{bad}");
        }
    }

    #[test]
    fn ports_and_weights() {
        assert_eq!(check_port(1), Ok(1));
        assert_eq!(check_port(65535), Ok(65535));
        assert_eq!(check_port(0), Ok(0), "no port");
        assert_eq!(check_port(65536).expect_err("65536").field, "port");
        assert!(check_weight(1).is_ok() && check_weight(10_000).is_ok());
        assert_eq!(check_weight(0).expect_err("0").field, "weight");
        assert_eq!(check_weight(10_001).expect_err("10001").field, "weight");
    }

    #[test]
    fn tags_and_meta() {
        assert!(check_tags(&vec!["t".to_string(); 64]).is_ok());
        assert!(check_tags(&vec!["t".to_string(); 65]).is_err());
        assert!(check_tags(&["x".repeat(256)]).is_err());
        assert!(check_tags(&[String::new()]).is_err());
        let mut m = BTreeMap::new();
        m.insert("version".to_string(), "v2".to_string());
        assert!(check_meta(m.iter()).is_ok());
        m.insert("bad key".to_string(), "x".to_string());
        assert_eq!(check_meta(m.iter()).expect_err("key").field, "meta");
        let big: BTreeMap<String, String> = (0..2).map(|i| (format!("k{i}"), "v".repeat(9000))).collect();
        assert!(check_meta(big.iter()).expect_err("size").rule.contains("16384"));
        let many: BTreeMap<String, String> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_meta(many.iter()).expect_err("count").rule.contains("64"));
    }
}
