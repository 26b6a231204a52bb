//! The errors the layers fail calls with, which the classifier recognises in any error chain.

use std::fmt;

/// The call was rejected because the breaker is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerOpen;

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker open")
    }
}

impl std::error::Error for BreakerOpen {}

/// The deadline passed before the answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}
