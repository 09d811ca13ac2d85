//! Parsing and local validation of what the operator types: endpoint lists, durations,
//! `--vnic`/`--vhba` specs, MAC and WWN syntax. Every error names the flag and the part at fault,
//! so a typo is caught here instead of costing a round trip.
//!
//! Local validation is only syntax; the server remains the authority on everything that needs
//! state (uniqueness, pool existence, limits).

use std::time::Duration;

use vnet_proto::vnet::v1::{Profile, Vhba, Vnic};

/// An operator listing more endpoints than this is almost certainly pasting the wrong thing.
pub const ENDPOINTS_MAX: usize = 32;
/// Longest name of anything (profile, server, pool, unit, vNIC, vHBA, network, fabric), as the
/// API documents: a name fits a DNS label.
pub const NAME_LEN_MAX: usize = 63;
pub const VLAN_MAX: u32 = 4094;

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

/// Checks a name against the API's rule: 1..=`len_max` characters of `[a-z0-9._-]`, starting
/// with a letter or digit. Upper case is refused, as the server refuses it, rather than folded.
pub fn check_name(what: &str, name: &str, len_max: usize) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err(format!("{what} is empty"));
    };
    let length = name.chars().count();
    if length > len_max {
        return Err(format!(
            "{what} {name:?} is {length} characters long, at most {len_max} are allowed"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} {name:?} contains {bad:?}; names use only a-z, 0-9, '.', '_' and '-'"
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "{what} {name:?} starts with {first:?}; names start with a letter or digit"
        ));
    }
    Ok(())
}

/// A name given on the command line (a unit, a profile), checked like [`check_name`] does.
pub fn parse_name(text: &str) -> Result<String, String> {
    check_name("name", text, NAME_LEN_MAX).map(|()| text.to_string())
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
    check_name(&format!("{flag} {spec:?}: name"), name, NAME_LEN_MAX)?;
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
                vnic.vlan = match value.parse::<u32>() {
                    Ok(vlan) if vlan <= VLAN_MAX => vlan,
                    _ => {
                        return Err(format!(
                            "--vnic {spec:?}: vlan {value:?} is not 0 (untagged) or 1..={VLAN_MAX}"
                        ))
                    }
                }
            }
            "mac" => {
                vnic.mac = parse_mac(&value).map_err(|e| format!("--vnic {spec:?}: mac {e}"))?
            }
            "pool" => vnic.pool = Some(value),
            // `split_spec` only lets the keys listed above through.
            _ => unreachable!("key {key} was not in the allowed list"),
        }
    }
    check_vnic_fields(&vnic).map_err(|e| format!("--vnic {spec:?}: {e}"))?;
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
    check_vhba_fields(&vhba).map_err(|e| format!("--vhba {spec:?}: {e}"))?;
    Ok(vhba)
}

/// Checks the fields of one vNIC, whether it came from `--vnic` or from `--file`. Whether it
/// has a source for its MAC is checked on the whole profile ([`check_profile`]), because an
/// update may inherit the MAC of the vNIC it replaces.
pub fn check_vnic_fields(vnic: &Vnic) -> Result<(), String> {
    check_name("name", &vnic.name, NAME_LEN_MAX)?;
    if vnic.network.is_empty() {
        return Err("net is missing (the Ethernet network to attach to)".into());
    }
    check_name("net", &vnic.network, NAME_LEN_MAX)?;
    if vnic.vlan > VLAN_MAX {
        return Err(format!(
            "vlan {} is not 0 (untagged) or 1..={VLAN_MAX}",
            vnic.vlan
        ));
    }
    if !vnic.mac.is_empty() {
        parse_mac(&vnic.mac).map_err(|e| format!("mac {e}"))?;
    }
    if let Some(pool) = &vnic.pool {
        check_name("pool", pool, NAME_LEN_MAX)?;
    }
    Ok(())
}

/// Checks the fields of one vHBA; see [`check_vnic_fields`].
pub fn check_vhba_fields(vhba: &Vhba) -> Result<(), String> {
    check_name("name", &vhba.name, NAME_LEN_MAX)?;
    if vhba.fabric.is_empty() {
        return Err("fabric is missing (the FC fabric to log into)".into());
    }
    check_name("fabric", &vhba.fabric, NAME_LEN_MAX)?;
    if !vhba.wwpn.is_empty() {
        parse_wwn(&vhba.wwpn).map_err(|e| format!("wwpn {e}"))?;
    }
    if !vhba.wwnn.is_empty() {
        parse_wwn(&vhba.wwnn).map_err(|e| format!("wwnn {e}"))?;
    }
    if let Some(pool) = &vhba.pool {
        check_name("pool", pool, NAME_LEN_MAX)?;
    }
    Ok(())
}

/// Everything about a profile that can be checked without the cluster's state, just before it
/// is sent.
pub fn check_profile(profile: &Profile) -> Result<(), String> {
    check_name("profile name", &profile.name, NAME_LEN_MAX)?;
    check_name("server", &profile.server, NAME_LEN_MAX)?;
    if let Some(unit) = &profile.preferred_unit {
        check_name("preferred unit", unit, NAME_LEN_MAX)?;
    }
    for (index, vnic) in profile.vnics.iter().enumerate() {
        let at = || format!("vnic {:?} (vnics[{index}])", vnic.name);
        check_vnic_fields(vnic).map_err(|e| format!("{}: {e}", at()))?;
        if profile.vnics[..index]
            .iter()
            .any(|other| other.name == vnic.name)
        {
            return Err(format!("{}: name given twice", at()));
        }
    }
    for (index, vhba) in profile.vhbas.iter().enumerate() {
        let at = || format!("vhba {:?} (vhbas[{index}])", vhba.name);
        check_vhba_fields(vhba).map_err(|e| format!("{}: {e}", at()))?;
        if profile.vhbas[..index]
            .iter()
            .any(|other| other.name == vhba.name)
        {
            return Err(format!("{}: name given twice", at()));
        }
    }
    Ok(())
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
            ("", "name is empty"),
            ("eth0", "net is missing"),
            (":net=prod:pool=p", "name is empty"),
            ("eth 0:net=prod:pool=p", "contains ' '"),
            ("eth0:net=prod:vlan=4095:pool=p", "vlan \"4095\""),
            ("eth0:net=prod:vlan=-1:pool=p", "vlan \"-1\""),
            ("eth0:net=prod:vlan=ten:pool=p", "vlan \"ten\""),
            (
                "eth0:net=prod:mac=aa:bb:cc",
                "mac \"aa:bb:cc\" is not a MAC",
            ),
            ("eth0:net=prod:mac=aa:bb:cc:dd:ee:gg", "is not a MAC"),
            ("eth0:net=prod:speed=10:pool=p", "unknown key \"speed\""),
            ("eth0:net=a:net=b:pool=p", "key \"net\" given twice"),
            ("eth0:prod", "\"prod\" is not key=value"),
            (
                "eth0:net=prod:pool=bad/pool",
                "pool \"bad/pool\" contains '/'",
            ),
        ] {
            let error = parse_vnic(input).unwrap_err();
            assert!(error.contains(needle), "{input:?} gave {error:?}");
            assert!(error.starts_with("--vnic"), "{input:?} gave {error:?}");
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
            ("fc0:pool=w", "fabric is missing"),
            (
                "fc0:fabric=a:wwpn=20:00:00:25:b5:00:00",
                "wwpn \"20:00:00:25:b5:00:00\"",
            ),
            (
                "fc0:fabric=a:wwnn=zz:00:00:25:b5:00:00:01:pool=w",
                "wwnn \"zz:",
            ),
            ("fc0:fabric=a:mac=aa:bb:cc:dd:ee:ff", "unknown key \"mac\""),
            ("fc0:fabric=A:pool=w", "fabric \"A\" contains 'A'"),
        ] {
            let error = parse_vhba(input).unwrap_err();
            assert!(error.contains(needle), "{input:?} gave {error:?}");
            assert!(error.starts_with("--vhba"), "{input:?} gave {error:?}");
        }
    }

    fn profile_with(vnics: &[&str], vhbas: &[&str]) -> Profile {
        Profile {
            name: "web-01".into(),
            server: "rack1-srv01".into(),
            vnics: vnics.iter().map(|spec| parse_vnic(spec).unwrap()).collect(),
            vhbas: vhbas.iter().map(|spec| parse_vhba(spec).unwrap()).collect(),
            ..Profile::default()
        }
    }

    #[test]
    fn a_complete_profile_passes() {
        let profile = profile_with(
            &["eth0:net=prod:pool=m", "eth1:net=b:mac=02:00:00:00:00:01"],
            &[
                "fc0:fabric=a:pool=w",
                "fc1:fabric=b:wwpn=20:00:00:00:00:00:00:01:wwnn=20:00:00:00:00:00:01:01",
            ],
        );
        assert_eq!(check_profile(&profile), Ok(()));
    }

    #[test]
    fn a_function_without_identity_or_pool_is_left_to_the_server() {
        // The server allocates from its pools, tried in name order, when neither is given.
        assert_eq!(
            check_profile(&profile_with(&["eth0:net=prod"], &[])),
            Ok(())
        );
        assert_eq!(
            check_profile(&profile_with(
                &[],
                &["fc0:fabric=a:wwpn=20:00:00:25:b5:00:00:01"]
            )),
            Ok(())
        );
        // Names are still checked locally.
        let error =
            check_profile(&profile_with(&["eth0:net=prod", "eth0:net=b"], &[])).unwrap_err();
        assert!(error.contains("name given twice"), "{error}");
    }

    #[test]
    fn duplicate_function_names_and_bad_profile_names_are_caught() {
        let error = check_profile(&profile_with(
            &["eth0:net=a:pool=m", "eth0:net=b:pool=m"],
            &[],
        ))
        .unwrap_err();
        assert!(error.contains("vnics[1]): name given twice"), "{error}");
        let mut profile = profile_with(&[], &[]);
        profile.server = String::new();
        assert!(check_profile(&profile)
            .unwrap_err()
            .contains("server is empty"));
        profile.server = "s".into();
        profile.preferred_unit = Some("unit a".into());
        assert!(check_profile(&profile)
            .unwrap_err()
            .contains("preferred unit"));
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

    #[test]
    fn names_follow_the_api_rule() {
        assert!(check_name("profile name", "web-01.a_b", NAME_LEN_MAX).is_ok());
        assert!(check_name("profile name", &"x".repeat(64), NAME_LEN_MAX)
            .unwrap_err()
            .contains("at most 63"));
        assert!(check_name("fabric", "A", NAME_LEN_MAX)
            .unwrap_err()
            .contains("contains 'A'"));
        assert!(check_name("pool", "-p", NAME_LEN_MAX)
            .unwrap_err()
            .contains("starts with '-'"));
        assert!(check_name("profile name", "a:b", NAME_LEN_MAX)
            .unwrap_err()
            .contains("':'"));
    }
}
