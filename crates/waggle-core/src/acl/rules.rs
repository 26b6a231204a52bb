//! Policy rules, Consul's model: a level (`read`, `list`, `write`, `deny`) per resource, either
//! for every object of a resource (`acl`, `keyring`, `operator`, `mesh`, `peering`) or per name,
//! exact (`key "a/b"`) or by prefix (`key_prefix "a/"`). Several policies merge into one
//! [`Rules`]; [`Rules::level`] resolves a name: an exact rule beats any prefix, the longest
//! prefix wins, and where merged policies give the same rule different levels `deny` wins, else
//! the broadest. Parsing rules text (HCL or JSON) is the server's; this is the parsed form.

use std::collections::BTreeMap;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Level {
    /// Nothing, and it overrides any grant of the same rule from another policy.
    Deny,
    /// Listing names (keys) without reading values.
    List,
    /// Reading (and listing).
    Read,
    /// Reading, listing and writing.
    Write,
}

impl Level {
    /// The level's name in rules (`read`, `list`, `write`, `deny`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Deny => "deny",
            Level::List => "list",
            Level::Read => "read",
            Level::Write => "write",
        }
    }

    /// Parses a rule's level.
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text {
            "deny" => Level::Deny,
            "list" => Level::List,
            "read" => Level::Read,
            "write" => Level::Write,
            _ => return None,
        })
    }

    /// Whether this level grants `access`.
    pub fn grants(self, access: Access) -> bool {
        match (self, access) {
            (Level::Deny, _) => false,
            (Level::Write, _) => true,
            (Level::Read, Access::Read | Access::List) => true,
            (Level::List, Access::List) => true,
            _ => false,
        }
    }

    /// The level two policies' rules for the same name merge to: `deny` wins, else the broader.
    fn merge(self, other: Level) -> Level {
        if self == Level::Deny || other == Level::Deny { Level::Deny } else { self.max(other) }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Access {
    /// To read.
    Read,
    /// To list names (keys) under a prefix.
    List,
    /// To write.
    Write,
}

impl Access {
    /// Consul's name for it in permission messages (`read`, `list`, `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::List => "list",
            Access::Write => "write",
        }
    }
}

/// The resources rules govern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Resource {
    /// The ACL system itself (`acl = "write"`).
    Acl,
    /// Agents, by node name.
    Agent,
    /// User events, by name.
    Event,
    /// KV keys (and Waggle's locks, which are named like keys).
    Key,
    /// The gossip keyring.
    Keyring,
    /// Nodes, by name.
    Node,
    /// Cluster operations (members, snapshots, Raft).
    Operator,
    /// Prepared queries, by name.
    Query,
    /// Services, by name.
    Service,
    /// Sessions, by node name.
    Session,
    /// The service mesh.
    Mesh,
    /// Cluster peering.
    Peering,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 12] = [
        Resource::Acl,
        Resource::Agent,
        Resource::Event,
        Resource::Key,
        Resource::Keyring,
        Resource::Node,
        Resource::Operator,
        Resource::Query,
        Resource::Service,
        Resource::Session,
        Resource::Mesh,
        Resource::Peering,
    ];

    /// The resource's name in rules and permission messages (`service`, `key`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Acl => "acl",
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Key => "key",
            Resource::Keyring => "keyring",
            Resource::Node => "node",
            Resource::Operator => "operator",
            Resource::Query => "query",
            Resource::Service => "service",
            Resource::Session => "session",
            Resource::Mesh => "mesh",
            Resource::Peering => "peering",
        }
    }

    /// Whether rules name objects of this resource (`key "a"`, `key_prefix "a/"`) rather than
    /// set one level for all of it (`acl = "write"`).
    pub fn is_named(self) -> bool {
        !matches!(self, Resource::Acl | Resource::Keyring | Resource::Operator | Resource::Mesh | Resource::Peering)
    }

    /// The resource a rule block names: `service`, `service_prefix`, `acl`, ... and whether it
    /// is a prefix block.
    pub fn parse_block(block: &str) -> Option<(Resource, bool)> {
        let (name, prefix) = match block.strip_suffix("_prefix") {
            Some(name) => (name, true),
            None => (block, false),
        };
        let resource = Resource::ALL.into_iter().find(|r| r.as_str() == name)?;
        (!prefix || resource.is_named()).then_some((resource, prefix))
    }
}

/// The rules of one resource: one level for all of it, or levels by exact name and by prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceRules {
    /// For resources without names (`acl`, `operator`, ...).
    pub all: Option<Level>,
    /// Levels by exact name.
    pub exact: BTreeMap<String, Level>,
    /// Levels by name prefix (`""` matches every name).
    pub prefix: BTreeMap<String, Level>,
}

impl ResourceRules {
    /// The level for `name`: the exact rule, else the longest matching prefix.
    fn level(&self, name: &str) -> Option<Level> {
        if let Some(level) = self.exact.get(name) {
            return Some(*level);
        }
        // The longest matching prefix: prefixes of `name` in the map, longest first.
        (0..=name.len()).rev().filter(|i| name.is_char_boundary(*i)).find_map(|i| self.prefix.get(&name[..i]).copied())
    }

    /// The broadest level any name under `prefix` could get (for a listing that may contain
    /// some: the caller filters entry by entry).
    fn any_under(&self, prefix: &str) -> Option<Level> {
        let below = self
            .exact
            .iter()
            .chain(&self.prefix)
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, level)| *level)
            .filter(|level| *level != Level::Deny)
            .max();
        match (self.level(prefix), below) {
            (Some(here), Some(below)) if here != Level::Deny => Some(here.max(below)),
            (Some(here), None) => Some(here),
            (_, below) => below,
        }
    }
}

/// The rules of one or more policies, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    /// By resource.
    pub resources: BTreeMap<Resource, ResourceRules>,
}

impl Rules {
    /// No rules.
    pub fn new() -> Self {
        Rules::default()
    }

    /// Adds a rule, merging with one already there for the same name (`deny` wins, else the
    /// broader level). `name` is ignored for resources without names.
    pub fn add(&mut self, resource: Resource, name: Option<&str>, prefix: bool, level: Level) {
        let rules = self.resources.entry(resource).or_default();
        let slot = match (resource.is_named(), name) {
            (false, _) => &mut rules.all,
            (true, name) => {
                let map = if prefix { &mut rules.prefix } else { &mut rules.exact };
                let name = name.unwrap_or_default().to_owned();
                let merged = map.get(&name).map_or(level, |old| old.merge(level));
                map.insert(name, merged);
                return;
            }
        };
        *slot = Some(slot.map_or(level, |old| old.merge(level)));
    }

    /// Merges another policy's rules into these.
    pub fn merge(&mut self, other: &Rules) {
        for (resource, rules) in &other.resources {
            if let Some(level) = rules.all {
                self.add(*resource, None, false, level);
            }
            for (name, level) in &rules.exact {
                self.add(*resource, Some(name), false, *level);
            }
            for (name, level) in &rules.prefix {
                self.add(*resource, Some(name), true, *level);
            }
        }
    }

    /// The level these rules give `name` of `resource` (`None`: no rule applies).
    pub fn level(&self, resource: Resource, name: &str) -> Option<Level> {
        let rules = self.resources.get(&resource)?;
        if resource.is_named() { rules.level(name) } else { rules.all }
    }

    /// The broadest level these rules give any name under `prefix` (`None`: no rule applies).
    pub fn level_under(&self, resource: Resource, prefix: &str) -> Option<Level> {
        let rules = self.resources.get(&resource)?;
        if resource.is_named() { rules.any_under(prefix) } else { rules.all }
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.resources.values().map(|r| usize::from(r.all.is_some()) + r.exact.len() + r.prefix.len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(Resource, &str, bool, Level)]) -> Rules {
        let mut r = Rules::new();
        for (resource, name, prefix, level) in list {
            r.add(*resource, Some(name), *prefix, *level);
        }
        r
    }

    #[test]
    fn exact_beats_prefix_and_the_longest_prefix_wins() {
        use Level::*;
        use Resource::Key;
        let r = rules(&[(Key, "", true, Read), (Key, "app/", true, Write), (Key, "app/secret", false, Deny)]);
        assert_eq!(r.level(Key, "other"), Some(Read));
        assert_eq!(r.level(Key, "app/x"), Some(Write));
        assert_eq!(r.level(Key, "app/secret"), Some(Deny), "exact beats the longer prefix");
        assert_eq!(r.level(Key, "app/secret2"), Some(Write), "an exact rule is not a prefix");
        assert_eq!(r.level(Key, "ap"), Some(Read));
        assert_eq!(r.level(Resource::Service, "web"), None, "no rule for the resource");
    }

    #[test]
    fn a_prefix_does_not_match_a_sibling() {
        let r = rules(&[(Resource::Key, "a/", true, Level::Write)]);
        assert_eq!(r.level(Resource::Key, "ab"), None, "key_prefix \"a/\" does not cover \"ab\"");
        assert_eq!(r.level(Resource::Key, "a/b"), Some(Level::Write));
    }

    #[test]
    fn merged_policies_deny_wins_else_the_broader() {
        let mut a = rules(&[(Resource::Service, "web", false, Level::Read), (Resource::Key, "k", false, Level::Write)]);
        let b = rules(&[(Resource::Service, "web", false, Level::Write), (Resource::Key, "k", false, Level::Deny)]);
        a.merge(&b);
        assert_eq!(a.level(Resource::Service, "web"), Some(Level::Write));
        assert_eq!(a.level(Resource::Key, "k"), Some(Level::Deny));
        let mut acl = Rules::new();
        acl.add(Resource::Acl, None, false, Level::Read);
        acl.add(Resource::Acl, Some("ignored"), false, Level::Write);
        assert_eq!(acl.level(Resource::Acl, ""), Some(Level::Write));
    }

    #[test]
    fn levels_grant_what_they_say() {
        assert!(Level::Write.grants(Access::Read) && Level::Write.grants(Access::List));
        assert!(Level::Read.grants(Access::List) && !Level::Read.grants(Access::Write));
        assert!(Level::List.grants(Access::List) && !Level::List.grants(Access::Read));
        assert!(!Level::Deny.grants(Access::List));
    }

    #[test]
    fn blocks_parse_with_and_without_prefix() {
        assert_eq!(Resource::parse_block("key_prefix"), Some((Resource::Key, true)));
        assert_eq!(Resource::parse_block("service"), Some((Resource::Service, false)));
        assert_eq!(Resource::parse_block("operator"), Some((Resource::Operator, false)));
        assert_eq!(Resource::parse_block("operator_prefix"), None);
        assert_eq!(Resource::parse_block("services"), None);
    }

    #[test]
    fn level_under_a_prefix_sees_grants_below_it() {
        let r = rules(&[(Resource::Key, "a/b/", true, Level::Read)]);
        assert_eq!(r.level_under(Resource::Key, "a/"), Some(Level::Read));
        assert_eq!(r.level(Resource::Key, "a/"), None);
        let d = rules(&[(Resource::Key, "", true, Level::Deny), (Resource::Key, "a/b", false, Level::Write)]);
        assert_eq!(d.level_under(Resource::Key, "a/"), Some(Level::Write));
    }
}
