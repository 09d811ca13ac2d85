//! Members: the `vnetd` nodes of the cluster (units with a switch, witnesses without), how rack
//! servers are cabled to each unit, and how many profiles each unit may present.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::limits::{ADDR_LEN_MAX, HOST_PORTS_MAX};
use crate::name::validate_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A Raft voter that owns a switch and presents profiles.
    Unit,
    /// A Raft voter with no switch: it only completes a quorum.
    Witness,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The Raft node id.
    pub id: u64,
    pub name: String,
    pub role: Role,
    /// Where the public gRPC API listens: `host:port`, optionally prefixed by `http://`/`https://`.
    pub api_addr: String,
    /// Where the peer (Raft) API listens, in the same form.
    pub peer_addr: String,
    /// Server name to the host port (`1..=HOST_PORTS_MAX`) it is cabled to on this unit.
    pub cabling: BTreeMap<String, u8>,
    /// Profiles this member may present at once; 0 for a witness.
    pub capacity: u32,
    /// The log features this member's `vnetd` applies: 0 before batched entries, [`PROTOCOL`]
    /// now. The leader writes a feature only once every member has registered a protocol that
    /// has it, so a rolling upgrade never hands an older node an entry it cannot apply. Absent
    /// in records written before it existed, and then 0.
    #[serde(default)]
    pub protocol: u32,
}

/// The log features this build applies: 1 adds `Command::Batch`.
pub const PROTOCOL: u32 = 1;

/// The first protocol that applies `Command::Batch`.
pub const PROTOCOL_BATCH: u32 = 1;

impl Member {
    /// The checks that need no state (names unique across members is checked by `apply`).
    pub fn validate(&self) -> Result<(), Rejection> {
        validate_name("name", &self.name)?;
        validate_addr("api_addr", &self.api_addr)?;
        validate_addr("peer_addr", &self.peer_addr)?;
        if self.role == Role::Witness {
            if self.capacity != 0 {
                return Err(Rejection::invalid(
                    "capacity",
                    &self.capacity.to_string(),
                    "must be 0 for a witness, which has no switch to present profiles on",
                ));
            }
            if let Some(server) = self.cabling.keys().next() {
                return Err(Rejection::invalid(
                    format!("cabling[{server}]"),
                    server,
                    "a witness has no switch, so no server can be cabled to it",
                ));
            }
        }
        // Server names are map keys, so each server has one port; the map below finds a port
        // claimed by two servers.
        let mut servers_by_port: BTreeMap<u8, &str> = BTreeMap::new();
        for (server, &port) in &self.cabling {
            let field = format!("cabling[{server}]");
            validate_name(&field, server)?;
            if !(1..=HOST_PORTS_MAX).contains(&port) {
                return Err(Rejection::invalid(
                    field,
                    &port.to_string(),
                    format!("host ports are numbered 1 to {HOST_PORTS_MAX}"),
                ));
            }
            if let Some(other) = servers_by_port.insert(port, server) {
                return Err(Rejection::invalid(
                    field,
                    &port.to_string(),
                    format!("host port {port} is already cabled to server {other:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// Accepts `host:port` or `http(s)://host:port`, with IPv6 hosts in brackets. Resolving names is
/// the edge's business; this only refuses addresses that cannot possibly be dialled. The API edge
/// runs it first and adds stricter checks of its own for new members; this rule itself must not
/// get stricter, since replaying a member record it once accepted must give the same state.
pub fn validate_addr(field: &str, value: &str) -> Result<(), Rejection> {
    let reject = |reason: &str| Err(Rejection::invalid(field, value, reason));
    if value.is_empty() {
        return reject("must not be empty");
    }
    let length = value.chars().count();
    if length > ADDR_LEN_MAX {
        return reject(&format!(
            "is {length} characters long, more than the limit of {ADDR_LEN_MAX}"
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return reject("must not contain whitespace or control characters");
    }
    let without_scheme = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .unwrap_or(value);
    let authority = without_scheme.strip_suffix('/').unwrap_or(without_scheme);
    let Some((host, port)) = authority.rsplit_once(':') else {
        return reject("must be host:port");
    };
    if !matches!(port.parse::<u16>(), Ok(1..)) {
        return reject("must end in a port number between 1 and 65535");
    }
    if host.is_empty() || host == "[]" {
        return reject("must name a host before the port");
    }
    if host.contains('/') {
        return reject("must not contain a path");
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return reject("an IPv6 host must be in brackets, like [::1]:7000");
    }
    Ok(())
}

/// The stricter rule for the address of a member being added: [`validate_addr`], then a host that
/// is an IPv4 address, a bracketed IPv6 address or a DNS name (labels of `[A-Za-z0-9-]`, at most
/// 63 characters, not starting or ending with '-'), and, for a peer address (`scheme_allowed`
/// false), no `http://` prefix, since peers dial `http://{peer_addr}`. Only the API edge and the
/// leader run this, before the member joins the Raft membership; `apply` keeps [`validate_addr`],
/// so records accepted before this rule existed still replay the same.
pub fn validate_new_addr(field: &str, value: &str, scheme_allowed: bool) -> Result<(), Rejection> {
    validate_addr(field, value)?;
    let reject = |reason: &str| Err(Rejection::invalid(field, value, reason));
    let without_scheme = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    if without_scheme.is_some() && !scheme_allowed {
        return reject("is host:port, without a scheme");
    }
    let authority = without_scheme.unwrap_or(value);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    // validate_addr found the ':' and a valid port.
    let host = authority.rsplit_once(':').map_or("", |(host, _)| host);
    let valid = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)
    };
    if valid {
        Ok(())
    } else {
        reject("the host must be an IPv4 address, an IPv6 address in brackets or a DNS name")
    }
}

fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // All digits and dots would be a malformed IPv4 address, not a name.
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> Member {
        Member {
            id: 1,
            name: "unit-a".into(),
            role: Role::Unit,
            api_addr: "10.0.0.1:7000".into(),
            peer_addr: "10.0.0.1:7001".into(),
            cabling: BTreeMap::from([("srv1".to_owned(), 1), ("srv2".to_owned(), 30)]),
            capacity: 30,
            protocol: 0,
        }
    }

    fn witness() -> Member {
        Member {
            id: 3,
            name: "witness".into(),
            role: Role::Witness,
            cabling: BTreeMap::new(),
            capacity: 0,
            ..unit()
        }
    }

    #[test]
    fn valid_members() {
        assert_eq!(unit().validate(), Ok(()));
        assert_eq!(witness().validate(), Ok(()));
        for addr in [
            "localhost:1",
            "http://10.0.0.1:7000",
            "https://node-a.example:443/",
            "[::1]:7000",
            "http://[fe80::1]:65535",
        ] {
            let member = Member {
                api_addr: addr.into(),
                ..unit()
            };
            assert_eq!(member.validate(), Ok(()), "{addr}");
        }
    }

    #[test]
    fn invalid_members_say_where() {
        type Edit = fn(&mut Member);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (|m| m.name = "Unit".into(), "name", "uppercase"),
            (|m| m.api_addr = String::new(), "api_addr", "empty"),
            (|m| m.api_addr = "10.0.0.1".into(), "api_addr", "host:port"),
            (
                |m| m.api_addr = "10.0.0.1:0".into(),
                "api_addr",
                "between 1 and 65535",
            ),
            (
                |m| m.api_addr = "10.0.0.1:70000".into(),
                "api_addr",
                "between 1 and 65535",
            ),
            (|m| m.api_addr = ":7000".into(), "api_addr", "name a host"),
            (|m| m.peer_addr = "::1:7000".into(), "peer_addr", "brackets"),
            (
                |m| m.peer_addr = "a b:7000".into(),
                "peer_addr",
                "whitespace",
            ),
            (
                |m| m.peer_addr = "http://h/x:7000".into(),
                "peer_addr",
                "path",
            ),
            (
                |m| m.peer_addr = "h:1".repeat(100),
                "peer_addr",
                "more than the limit of 255",
            ),
            (
                |m| {
                    m.cabling.insert("srv3".into(), 0);
                },
                "cabling[srv3]",
                "numbered 1 to 30",
            ),
            (
                |m| {
                    m.cabling.insert("srv3".into(), 31);
                },
                "cabling[srv3]",
                "numbered 1 to 30",
            ),
            (
                |m| {
                    m.cabling.insert("srv3".into(), 1);
                },
                "cabling[srv3]",
                "already cabled to server \"srv1\"",
            ),
            (
                |m| {
                    m.cabling.insert("Srv".into(), 2);
                },
                "cabling[Srv]",
                "uppercase",
            ),
            (
                |m| {
                    m.role = Role::Witness;
                    m.cabling.clear();
                },
                "capacity",
                "must be 0 for a witness",
            ),
            (
                |m| {
                    m.role = Role::Witness;
                    m.capacity = 0;
                },
                "cabling[srv1]",
                "no switch",
            ),
        ];
        for (edit, field, reason) in cases {
            let mut member = unit();
            edit(&mut member);
            match member.validate() {
                Err(Rejection::InvalidArgument {
                    field: actual_field,
                    reason: actual_reason,
                    ..
                }) => {
                    assert_eq!(actual_field, field, "{member:?}");
                    assert!(actual_reason.contains(reason), "{field}: {actual_reason}");
                }
                other => panic!("{field}: expected InvalidArgument, got {other:?}"),
            }
        }
    }

    #[test]
    fn new_member_addresses_must_be_dialable() {
        for (value, scheme_allowed) in [
            ("10.0.0.1:7101", false),
            ("[::1]:7101", false),
            ("unit-c.example.net:7101", false),
            ("unit-c:7101", false),
            ("http://10.0.0.1:7001", true),
            ("https://unit-c.example.net:7001/", true),
        ] {
            assert_eq!(
                validate_new_addr("addr", value, scheme_allowed),
                Ok(()),
                "{value}"
            );
        }
        for (value, scheme_allowed, reason) in [
            ("http://10.0.0.1:7101", false, "without a scheme"),
            ("unit_c:7101", false, "DNS name"),
            ("-unit:7101", false, "DNS name"),
            ("10.0.0.256:7101", false, "DNS name"),
            ("[::g]:7101", false, "DNS name"),
            ("[::1:7101", false, "brackets"),
            ("a%b:7101", true, "DNS name"),
            ("10.0.0.1:0", false, "port"),
            ("10.0.0.1:70000", false, "port"),
            ("", false, "empty"),
        ] {
            match validate_new_addr("addr", value, scheme_allowed) {
                Err(Rejection::InvalidArgument {
                    field,
                    reason: actual,
                    ..
                }) => {
                    assert_eq!(field, "addr");
                    assert!(actual.contains(reason), "{value}: {actual}");
                }
                other => panic!("{value}: expected a refusal, got {other:?}"),
            }
        }
    }
}
