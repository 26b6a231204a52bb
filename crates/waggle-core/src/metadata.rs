//! Instance metadata: a small sorted map stored as one exact-size vector.
//!
//! Registries hold hundreds of thousands of instances with a handful of metadata pairs each;
//! a `BTreeMap` node costs ~550 bytes however few pairs it holds, a sorted boxed slice costs
//! 48 bytes per pair.

use std::{collections::BTreeMap, fmt};

/// Key/value metadata of an instance (≤ 64 pairs, ≤ 16 KiB in total), sorted by key, keys
/// unique. Serialises as a JSON object.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Metadata(Box<[(String, String)]>);

impl Metadata {
    /// No pairs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        let mut pairs = std::mem::take(&mut self.0).into_vec();
        let previous = match pairs.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut pairs[i].1, value)),
            Err(i) => {
                pairs.insert(i, (key, value));
                None
            }
        };
        self.0 = pairs.into_boxed_slice();
        previous
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.0[i].1.as_str())
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, String)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        // Later pairs win, as with a map.
        let map: BTreeMap<String, String> = iter.into_iter().collect();
        Metadata(map.into_iter().collect())
    }
}

impl IntoIterator for Metadata {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_sorted_map() {
        let mut m = Metadata::new();
        assert_eq!(m.insert("b".into(), "2".into()), None);
        assert_eq!(m.insert("a".into(), "1".into()), None);
        assert_eq!(m.insert("b".into(), "3".into()), Some("2".into()));
        assert_eq!(m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["a=1", "b=3"]);
        assert_eq!((m.get("a"), m.get("z"), m.len()), (Some("1"), None, 2));
        let json = serde_json_like(&m);
        assert_eq!(json, "{a:1,b:3}");
        let from: Metadata =
            vec![("x".to_string(), "1".to_string()), ("x".to_string(), "2".to_string())].into_iter().collect();
        assert_eq!(from.get("x"), Some("2"));
    }

    fn serde_json_like(m: &Metadata) -> String {
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{{{}}}", parts.join(","))
    }
}
