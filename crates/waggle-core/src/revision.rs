//! The global revision counter.

use std::fmt;

/// A point in the registry's history. One global counter, monotonic, never 0: the empty
/// registry is at revision 1 and every state change increments it by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Revision(u64);

impl Revision {
    /// The revision of an empty registry.
    pub const INITIAL: Revision = Revision(1);

    /// Wraps a raw value; 0 is mapped to [`Revision::INITIAL`] so a revision is never 0.
    pub fn new(raw: u64) -> Self {
        Revision(raw.max(1))
    }

    /// The raw value, always ≥ 1.
    pub fn get(self) -> u64 {
        self.0
    }

    pub(crate) fn next(self) -> Self {
        Revision(self.0.saturating_add(1))
    }
}

impl Default for Revision {
    fn default() -> Self {
        Revision::INITIAL
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
