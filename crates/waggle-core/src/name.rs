//! Validated names: services, instance ids and zones.

use std::{borrow::Borrow, fmt, str::FromStr, sync::Arc};

use crate::{ValidationError, validate::limits};

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps a value.
            pub fn new(value: impl AsRef<str>) -> Result<Self, ValidationError> {
                let value = value.as_ref();
                $check(value)?;
                Ok($name(Arc::from(value)))
            }
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0.to_string()
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A service name: a DNS label (`a-z`, `0-9`, `-`; 1–63 characters; no leading or trailing
    /// `-`), so that it can be served as `<name>.service.<domain>` over DNS.
    ServiceName,
    check_service_name
);

string_newtype!(
    /// An instance id, unique within its service: 1–128 printable ASCII characters without
    /// spaces. Defaults to `ADDRESS:PORT`.
    InstanceId,
    check_instance_id
);

string_newtype!(
    /// A locality zone such as `eu-west-1a`: 1–64 characters of `A-Z a-z 0-9 _ . -`.
    Zone,
    check_zone
);

fn check_service_name(s: &str) -> Result<(), ValidationError> {
    let rule = "must be a DNS label: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'";
    let ok = !s.is_empty()
        && s.len() <= limits::MAX_SERVICE_NAME
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok { Ok(()) } else { Err(ValidationError::new("service", format!("{rule} (got {s:?})"))) }
}

fn check_instance_id(s: &str) -> Result<(), ValidationError> {
    if s.is_empty() || s.len() > limits::MAX_INSTANCE_ID {
        return Err(ValidationError::new(
            "id",
            format!("must be 1-{} characters long (got {})", limits::MAX_INSTANCE_ID, s.len()),
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::new(
            "id",
            format!("must contain only printable ASCII characters without spaces (got {s:?})"),
        ));
    }
    Ok(())
}

fn check_zone(s: &str) -> Result<(), ValidationError> {
    let ok = !s.is_empty()
        && s.len() <= limits::MAX_ZONE
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "zone",
            format!("must be 1-{} characters of A-Z, a-z, 0-9, '_', '.', '-' (got {s:?})", limits::MAX_ZONE),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels() {
        for ok in ["a", "web", "web-1", "0", &"a".repeat(63)] {
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "web-", "Web", "web_1", "web.api", &"a".repeat(64), "wéb"] {
            let err = ServiceName::new(bad).expect_err(bad);
            assert_eq!(err.field, "service");
            assert!(err.rule.contains("DNS label"), "{err}");
        }
    }

    #[test]
    fn instance_ids_are_printable() {
        assert!(InstanceId::new("10.0.0.1:80").is_ok());
        assert!(InstanceId::new("x".repeat(128)).is_ok());
        for bad in ["", "a b", "tab\there", "nl\n", &"x".repeat(129), "é"] {
            assert_eq!(InstanceId::new(bad).expect_err(bad).field, "id");
        }
    }

    #[test]
    fn zones() {
        assert!(Zone::new("eu-west-1a").is_ok());
        assert!(Zone::new("").is_err());
        assert!(Zone::new("a b").is_err());
    }
}
