//! The list-valued keys: `initial_cluster` and `cabling`, and the `host:port` form of every
//! address key.

use std::collections::BTreeMap;

use raft_store::NodeId;

use super::{invalid, ConfigError, InitialMember, HOST_PORTS_MAX};

pub(super) fn check_host_port(key: &'static str, addr: &str) -> Result<(), ConfigError> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(invalid(key, addr, "expected host:port"));
    };
    if host.is_empty() {
        return Err(invalid(key, addr, "the host is empty"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(invalid(
            key,
            addr,
            format!("port {port:?} is not a number in 1..=65535"),
        )),
    }
}

/// Parses `id=name@host:port,...`.
pub fn parse_initial_cluster(list: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut members: Vec<InitialMember> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |reason: String| invalid("initial_cluster", item, reason);
        let (id, rest) = item
            .split_once('=')
            .ok_or_else(|| bad("expected id=name@host:port".to_string()))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("id {id:?} is not a positive integer")))?;
        if id == 0 {
            return Err(bad("node ids start at 1".to_string()));
        }
        let (name, peer_addr) = rest
            .split_once('@')
            .ok_or_else(|| bad("expected id=name@host:port".to_string()))?;
        vnet_model::name::validate_name("name", name).map_err(|e| bad(e.to_string()))?;
        check_host_port("initial_cluster", peer_addr)?;
        if let Some(dup) = members
            .iter()
            .find(|m| m.id == id || m.name == name || m.peer_addr == peer_addr)
        {
            return Err(bad(format!(
                "it repeats the id, name or address of {}={}@{}",
                dup.id, dup.name, dup.peer_addr
            )));
        }
        members.push(InitialMember {
            id,
            name: name.to_string(),
            peer_addr: peer_addr.to_string(),
        });
    }
    Ok(members)
}

/// Parses `server=port,...`.
pub fn parse_cabling(list: &str) -> Result<BTreeMap<String, u8>, ConfigError> {
    let mut cabling = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |reason: String| invalid("cabling", item, reason);
        let (server, port) = item
            .split_once('=')
            .ok_or_else(|| bad("expected server=port".to_string()))?;
        vnet_model::name::validate_name("server", server).map_err(|e| bad(e.to_string()))?;
        let port: u8 = port
            .parse()
            .ok()
            .filter(|p| (1..=HOST_PORTS_MAX).contains(p))
            .ok_or_else(|| bad(format!("port {port:?} is not in 1..={HOST_PORTS_MAX}")))?;
        if let Some((other, _)) = cabling.iter().find(|(_, p)| **p == port) {
            return Err(bad(format!("port {port} is already cabled to {other}")));
        }
        if cabling.insert(server.to_string(), port).is_some() {
            return Err(bad(format!("server {server} is listed twice")));
        }
    }
    Ok(cabling)
}
