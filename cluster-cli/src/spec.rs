//! Parsing what the operator types: endpoint lists, durations, `--vnic`/`--vhba` specs, MAC and
//! WWN syntax. Every error names the flag and the part at fault.
//!
//! Only syntax is checked here: that a VLAN is a number, a MAC is six hex bytes, a spec is
//! `NAME:key=value...`. The server is the one authority on the rules (the naming rule, VLAN
//! range, required fields, limits, uniqueness): it refuses a request that breaks one with
//! INVALID_ARGUMENT naming the field (`vnics[0].vlan`), and vnetctl prints that message as it
//! is (ARCHITECTURE.md, "cluster-cli"). So a rule lives in one place, `vnet-model`, which the
//! CLI does not link.

use std::time::Duration;

use vnet_proto::vnet::v1::{Vhba, Vnic};

/// An operator listing more endpoints than this is almost certainly pasting the wrong thing.
pub const ENDPOINTS_MAX: usize = 32;

/// The `--endpoints` list: host:port entries, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<String>);

/// Parses `host:port[,host:port...]`. A `http://` prefix is tolerated because people paste URLs.
pub fn parse_endpoints(text: &str) -> Result<Endpoints, String> {
    let mut endpoints = Vec::new();
    for (index, raw) in text.split(',').enumerate() {
        let entry = raw.trim();
        let entry = entry.strip_prefix("http://").unwrap_or(entry);
        if entry.is_empty() {
            return Err(format!("entry {} is empty in {text:?}", index + 1));
        }
        let (host, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("{entry:?} is not host:port"))?;
        if host.is_empty() || host == "[]" {
            return Err(format!("{entry:?} has no host"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(format!(
                "{entry:?}: write an IPv6 address in brackets, e.g. [::1]:7001"
            ));
        }
        match port.parse::<u16>() {
            Ok(port) if port != 0 => {}
            _ => return Err(format!("{entry:?}: port {port:?} is not 1..=65535")),
        }
        if !endpoints.iter().any(|known| known == entry) {
            endpoints.push(entry.to_string());
        }
    }
    if endpoints.len() > ENDPOINTS_MAX {
        return Err(format!(
            "{} endpoints given, at most {ENDPOINTS_MAX} are accepted",
            endpoints.len()
        ));
    }
    Ok(Endpoints(endpoints))
}

/// Parses `500ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        _ => return Err(format!("{text:?}: unit {unit:?} is not one of ms, s, m")),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: a duration must be above zero"));
    }
    Ok(duration)
}

/// Parses colon-separated hex bytes (a MAC has 6, a WWN 8) into a normalised lower-case string.
fn parse_hex_bytes(text: &str, count: usize) -> Option<String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != count {
        return None;
    }
    if parts
        .iter()
        .all(|part| part.len() == 2 && part.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Some(text.to_ascii_lowercase())
    } else {
        None
    }
}

pub fn parse_mac(text: &str) -> Result<String, String> {
    parse_hex_bytes(text, 6).ok_or_else(|| format!("{text:?} is not a MAC like aa:bb:cc:dd:ee:ff"))
}

pub fn parse_wwn(text: &str) -> Result<String, String> {
    parse_hex_bytes(text, 8)
        .ok_or_else(|| format!("{text:?} is not a WWN like 20:00:00:25:b5:00:00:01"))
}

/// A spec's name and its key/value pairs, in the order given.
type SpecParts<'a> = (&'a str, Vec<(&'a str, String)>);

/// Splits `NAME:key=value:key=value` into the name and its key/value pairs.
///
/// MACs and WWNs contain colons themselves, so a segment without `=` is the continuation of the
/// previous value (`mac=aa:bb:...` arrives as `mac=aa`, `bb`, ...). Keys are checked against
/// `allowed` and may appear once.
fn split_spec<'a>(flag: &str, spec: &'a str, allowed: &[&str]) -> Result<SpecParts<'a>, String> {
    let mut segments = spec.split(':');
    // `split` always yields at least one item, even for an empty string.
    let name = segments.next().unwrap_or_default();
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for segment in segments {
        match segment.split_once('=') {
            Some((key, value)) => {
                if !allowed.contains(&key) {
                    return Err(format!(
                        "{flag} {spec:?}: unknown key {key:?}; expected one of {}",
                        allowed.join(", ")
                    ));
                }
                if pairs.iter().any(|(known, _)| *known == key) {
                    return Err(format!("{flag} {spec:?}: key {key:?} given twice"));
                }
                pairs.push((key, value.to_string()));
            }
            None => match pairs.last_mut() {
                Some((_, value)) => {
                    value.push(':');
                    value.push_str(segment);
                }
                None => {
                    return Err(format!(
                        "{flag} {spec:?}: {segment:?} is not key=value; expected NAME:{}=...",
                        allowed[0]
                    ))
                }
            },
        }
    }
    Ok((name, pairs))
}

/// Parses `NAME:net=NETWORK[:vlan=N][:mac=MAC][:pool=POOL]`.
pub fn parse_vnic(spec: &str) -> Result<Vnic, String> {
    let (name, pairs) = split_spec("--vnic", spec, &["net", "vlan", "mac", "pool"])?;
    let mut vnic = Vnic {
        name: name.to_string(),
        ..Vnic::default()
    };
    for (key, value) in pairs {
        match key {
            "net" => vnic.network = value,
            "vlan" => {
                vnic.vlan = value.parse::<u32>().map_err(|_| {
                    format!("--vnic {spec:?}: vlan {value:?} is not a number (0: untagged)")
                })?
            }
            "mac" => {
                vnic.mac = parse_mac(&value).map_err(|e| format!("--vnic {spec:?}: mac {e}"))?
            }
            "pool" => vnic.pool = Some(value),
            // `split_spec` only lets the keys listed above through.
            _ => unreachable!("key {key} was not in the allowed list"),
        }
    }
    Ok(vnic)
}

/// Parses `NAME:fabric=FABRIC[:wwpn=WWN][:wwnn=WWN][:pool=POOL]`.
pub fn parse_vhba(spec: &str) -> Result<Vhba, String> {
    let (name, pairs) = split_spec("--vhba", spec, &["fabric", "wwpn", "wwnn", "pool"])?;
    let mut vhba = Vhba {
        name: name.to_string(),
        ..Vhba::default()
    };
    for (key, value) in pairs {
        match key {
            "fabric" => vhba.fabric = value,
            "wwpn" => {
                vhba.wwpn = parse_wwn(&value).map_err(|e| format!("--vhba {spec:?}: wwpn {e}"))?
            }
            "wwnn" => {
                vhba.wwnn = parse_wwn(&value).map_err(|e| format!("--vhba {spec:?}: wwnn {e}"))?
            }
            "pool" => vhba.pool = Some(value),
            // `split_spec` only lets the keys listed above through.
            _ => unreachable!("key {key} was not in the allowed list"),
        }
    }
    Ok(vhba)
}

/// The `--concurrency` list of bench, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyLevels(pub Vec<usize>);

/// Parses `--concurrency 1,16,64`.
pub fn parse_concurrency_levels(text: &str) -> Result<ConcurrencyLevels, String> {
    /// More concurrent requests than this from one process measures the client, not the cluster.
    const CONCURRENCY_MAX: usize = 1024;
    let mut levels = Vec::new();
    for raw in text.split(',') {
        let level = raw.trim();
        match level.parse::<usize>() {
            Ok(n) if (1..=CONCURRENCY_MAX).contains(&n) => levels.push(n),
            _ => {
                return Err(format!(
                    "{level:?} in {text:?} is not a concurrency in 1..={CONCURRENCY_MAX}"
                ))
            }
        }
    }
    Ok(ConcurrencyLevels(levels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_in_order_without_duplicates() {
        let parsed =
            parse_endpoints("127.0.0.1:7001, 127.0.0.1:7002,http://node-c:7003,127.0.0.1:7001")
                .unwrap();
        assert_eq!(
            parsed.0,
            vec!["127.0.0.1:7001", "127.0.0.1:7002", "node-c:7003"]
        );
        assert_eq!(parse_endpoints("[::1]:7001").unwrap().0, vec!["[::1]:7001"]);
    }

    #[test]
    fn bad_endpoints_are_named_in_the_error() {
        for (input, needle) in [
            ("", "entry 1 is empty"),
            ("a:1,,b:2", "entry 2 is empty"),
            ("localhost", "\"localhost\" is not host:port"),
            (":7001", "has no host"),
            ("h:0", "port \"0\""),
            ("h:70000", "port \"70000\""),
            ("h:x", "port \"x\""),
            ("::1:7001", "IPv6"),
        ] {
            let error = parse_endpoints(input).unwrap_err();
            assert!(error.contains(needle), "{input:?} gave {error:?}");
        }
        let many = (1..=33)
            .map(|i| format!("h:{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_endpoints(&many).unwrap_err().contains("at most 32"));
    }

    #[test]
    fn durations_accept_units_and_reject_nonsense() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").unwrap_err().contains("above zero"));
        assert!(parse_duration("5h").unwrap_err().contains("unit \"h\""));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn vnic_spec_with_every_key() {
        let vnic = parse_vnic("eth0:net=prod:vlan=100:mac=AA:BB:CC:DD:EE:0F:pool=macs").unwrap();
        assert_eq!(
            vnic,
            Vnic {
                name: "eth0".into(),
                mac: "aa:bb:cc:dd:ee:0f".into(),
                network: "prod".into(),
                vlan: 100,
                pool: Some("macs".into()),
            }
        );
    }

    #[test]
    fn vnic_spec_keys_in_any_order_and_vlan_defaults_to_untagged() {
        let vnic = parse_vnic("eth1:pool=macs:net=backup").unwrap();
        assert_eq!(vnic.vlan, 0);
        assert_eq!(vnic.network, "backup");
        assert_eq!(vnic.mac, "");
        assert_eq!(vnic.pool.as_deref(), Some("macs"));
        let explicit = parse_vnic("eth2:mac=02:00:00:00:00:01:net=prod").unwrap();
        assert_eq!(explicit.mac, "02:00:00:00:00:01");
        assert_eq!(explicit.pool, None);
    }

    #[test]
    fn bad_vnic_specs_name_the_part_at_fault() {
        for (input, needle) in [
            (
                "eth0:net=prod:vlan=-1:pool=p",
                "vlan \"-1\" is not a number",
            ),
            (
                "eth0:net=prod:vlan=ten:pool=p",
                "vlan \"ten\" is not a number",
            ),
            (
                "eth0:net=prod:mac=aa:bb:cc",
                "mac \"aa:bb:cc\" is not a MAC",
            ),
            ("eth0:net=prod:mac=aa:bb:cc:dd:ee:gg", "is not a MAC"),
            ("eth0:net=prod:speed=10:pool=p", "unknown key \"speed\""),
            ("eth0:net=a:net=b:pool=p", "key \"net\" given twice"),
            ("eth0:prod", "\"prod\" is not key=value"),
        ] {
            let error = parse_vnic(input).unwrap_err();
            assert!(error.contains(needle), "{input:?} gave {error:?}");
            assert!(error.starts_with("--vnic"), "{input:?} gave {error:?}");
        }
    }

    #[test]
    fn rules_are_left_to_the_server() {
        // The naming rule, the VLAN range and required fields are the server's to enforce (it
        // names the field in its INVALID_ARGUMENT); only syntax is refused here.
        for input in [
            "",
            "eth0",
            ":net=prod:pool=p",
            "eth 0:net=prod:pool=p",
            "eth0:net=prod:vlan=4095:pool=p",
            "eth0:net=prod:pool=bad/pool",
            "ETH0:net=Prod",
        ] {
            assert!(parse_vnic(input).is_ok(), "{input:?} is sent as it is");
        }
        assert_eq!(
            parse_vnic("eth0:net=prod:vlan=4095").unwrap().vlan,
            4095,
            "a VLAN is passed on as given"
        );
        for input in ["fc0:pool=w", "fc0:fabric=A:pool=w", "-fc:fabric=a"] {
            assert!(parse_vhba(input).is_ok(), "{input:?} is sent as it is");
        }
    }

    #[test]
    fn vhba_spec_with_explicit_identities() {
        let vhba =
            parse_vhba("fc0:fabric=a:wwpn=20:00:00:25:B5:00:00:01:wwnn=20:00:00:25:b5:00:01:01")
                .unwrap();
        assert_eq!(
            vhba,
            Vhba {
                name: "fc0".into(),
                wwpn: "20:00:00:25:b5:00:00:01".into(),
                wwnn: "20:00:00:25:b5:00:01:01".into(),
                fabric: "a".into(),
                pool: None,
            }
        );
        let pooled = parse_vhba("fc1:fabric=b:pool=wwns").unwrap();
        assert_eq!(pooled.pool.as_deref(), Some("wwns"));
        assert_eq!(pooled.wwpn, "");
    }

    #[test]
    fn bad_vhba_specs_name_the_part_at_fault() {
        for (input, needle) in [
            (
                "fc0:fabric=a:wwpn=20:00:00:25:b5:00:00",
                "wwpn \"20:00:00:25:b5:00:00\"",
            ),
            (
                "fc0:fabric=a:wwnn=zz:00:00:25:b5:00:00:01:pool=w",
                "wwnn \"zz:",
            ),
            ("fc0:fabric=a:mac=aa:bb:cc:dd:ee:ff", "unknown key \"mac\""),
        ] {
            let error = parse_vhba(input).unwrap_err();
            assert!(error.contains(needle), "{input:?} gave {error:?}");
            assert!(error.starts_with("--vhba"), "{input:?} gave {error:?}");
        }
    }

    #[test]
    fn concurrency_levels_parse_and_are_bounded() {
        assert_eq!(
            parse_concurrency_levels("1,16, 64").unwrap().0,
            vec![1, 16, 64]
        );
        assert!(parse_concurrency_levels("0").unwrap_err().contains("\"0\""));
        assert!(parse_concurrency_levels("1,,2").is_err());
        assert!(parse_concurrency_levels("5000").is_err());
    }
}
