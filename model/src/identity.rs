//! The identities a profile carries: virtual MAC addresses and virtual World Wide Names.
//!
//! Both types can only hold values a switch may present (a `Mac` is never zero or multicast, a
//! `Wwn` is never zero and always has a supported NAA), so every later stage can rely on that
//! without checking again. Both serialize as their canonical strings, which keeps snapshots and
//! the Raft log readable and independent of the in-memory layout.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::VALUE_SHOWN_LEN_MAX;

/// Which kind of identity a value, pool or error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdentityKind {
    Mac,
    Wwn,
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentityKind::Mac => "MAC",
            IdentityKind::Wwn => "WWN",
        })
    }
}

/// Why a string or number is not a usable MAC or WWN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdentityError {
    pub kind: IdentityKind,
    /// The offending input, cut to `VALUE_SHOWN_LEN_MAX` characters.
    pub value: String,
    pub reason: String,
}

impl IdentityError {
    fn new(kind: IdentityKind, value: &str, reason: impl Into<String>) -> IdentityError {
        IdentityError {
            kind,
            value: shown(value),
            reason: reason.into(),
        }
    }
}

/// Cuts a value echoed in an error message, so a hostile or mistaken megabyte-long input does not
/// travel through the Raft log and every log line that reports it.
pub(crate) fn shown(value: &str) -> String {
    if value.chars().count() <= VALUE_SHOWN_LEN_MAX {
        value.to_owned()
    } else {
        let mut cut: String = value.chars().take(VALUE_SHOWN_LEN_MAX).collect();
        cut.push('…');
        cut
    }
}

/// A unicast, non-zero, 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(u64);

/// The individual/group bit: set in the first octet of every multicast (and the broadcast) address.
const MAC_GROUP_BIT: u64 = 0x01 << 40;
const MAC_BITS_MASK: u64 = (1 << 48) - 1;

impl Mac {
    pub fn as_u64(&self) -> u64 {
        self.0
    }

    pub fn from_u64(value: u64) -> Result<Mac, IdentityError> {
        let reject = |reason: &str| {
            Err(IdentityError::new(
                IdentityKind::Mac,
                &format!("{value:#x}"),
                reason,
            ))
        };
        if value & !MAC_BITS_MASK != 0 {
            return reject("does not fit in 48 bits");
        }
        if value == 0 {
            return reject("is the all-zero address");
        }
        if value == MAC_BITS_MASK {
            return reject("is the broadcast address");
        }
        if value & MAC_GROUP_BIT != 0 {
            return reject("is a multicast address (the I/G bit of the first octet is set)");
        }
        Ok(Mac(value))
    }

    pub fn octets(&self) -> [u8; 6] {
        let bytes = self.0.to_be_bytes();
        [bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]
    }

    /// The first octet: the one a pool's range must keep constant, because it holds the I/G bit.
    pub fn first_octet(&self) -> u8 {
        self.octets()[0]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_octets(f, &self.octets())
    }
}

impl FromStr for Mac {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Mac, IdentityError> {
        let octets = parse_octets::<6>(text, false, "02:00:00:00:00:01")
            .map_err(|reason| IdentityError::new(IdentityKind::Mac, text, reason))?;
        let value = octets
            .iter()
            .fold(0u64, |acc, &octet| (acc << 8) | u64::from(octet));
        // Re-label the error with the text the user typed rather than the number it parsed to.
        Mac::from_u64(value).map_err(|err| IdentityError::new(IdentityKind::Mac, text, err.reason))
    }
}

/// A 64-bit World Wide Name (port or node name) with a supported Network Address Authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Wwn(u64);

/// NAA 1 (IEEE 48-bit) names keep the 12 bits after the NAA nibble zero.
const WWN_NAA1_RESERVED_MASK: u64 = 0x0fff << 48;

impl Wwn {
    pub fn as_u64(&self) -> u64 {
        self.0
    }

    pub fn from_u64(value: u64) -> Result<Wwn, IdentityError> {
        let reject = |reason: String| {
            Err(IdentityError::new(
                IdentityKind::Wwn,
                &format_octets(&value.to_be_bytes()),
                reason,
            ))
        };
        if value == 0 {
            return reject("is all zeros".to_owned());
        }
        match naa_of(value) {
            1 if value & WWN_NAA1_RESERVED_MASK != 0 => reject(
                "has NAA 1 (IEEE 48-bit), which requires the 12 bits after the NAA nibble to be zero"
                    .to_owned(),
            ),
            1 | 2 | 3 | 5 => Ok(Wwn(value)),
            naa => reject(format!(
                "has NAA {naa}, but only NAA 1 (IEEE 48-bit), 2 (IEEE extended), \
                 3 (locally assigned) and 5 (IEEE registered) are accepted"
            )),
        }
    }

    /// The Network Address Authority: the top nibble, which says how the rest is to be read.
    pub fn naa(&self) -> u8 {
        naa_of(self.0)
    }

    pub fn octets(&self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

fn naa_of(value: u64) -> u8 {
    // The shift leaves 4 bits, so the cast keeps every one of them.
    (value >> 60) as u8
}

impl fmt::Display for Wwn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_octets(f, &self.octets())
    }
}

impl FromStr for Wwn {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Wwn, IdentityError> {
        let octets = parse_octets::<8>(text, true, "20:00:00:00:00:00:00:01")
            .map_err(|reason| IdentityError::new(IdentityKind::Wwn, text, reason))?;
        Wwn::from_u64(u64::from_be_bytes(octets))
            .map_err(|err| IdentityError::new(IdentityKind::Wwn, text, err.reason))
    }
}

fn write_octets(f: &mut fmt::Formatter<'_>, octets: &[u8]) -> fmt::Result {
    for (position, octet) in octets.iter().enumerate() {
        if position > 0 {
            f.write_str(":")?;
        }
        write!(f, "{octet:02x}")?;
    }
    Ok(())
}

fn format_octets(octets: &[u8]) -> String {
    struct Octets<'a>(&'a [u8]);
    impl fmt::Display for Octets<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_octets(f, self.0)
        }
    }
    Octets(octets).to_string()
}

/// Parses `N` hex octets separated by one consistent ':' or '-' (or, when `plain_allowed`, `2N`
/// hex digits with no separator). Returns the reason on failure; the caller adds kind and value.
fn parse_octets<const N: usize>(
    text: &str,
    plain_allowed: bool,
    example: &str,
) -> Result<[u8; N], String> {
    if let Some(bad) = text
        .chars()
        .find(|&c| !(c.is_ascii_hexdigit() || c == ':' || c == '-'))
    {
        return Err(format!(
            "contains {bad:?}, which is neither a hex digit nor a ':' or '-' separator"
        ));
    }
    // Every character is ASCII from here on, so byte positions are character positions.
    let bytes = text.as_bytes();
    let shape = || {
        let plain = if plain_allowed {
            format!(" or {} plain hex digits", 2 * N)
        } else {
            String::new()
        };
        format!("expected {N} two-digit hex octets separated by ':' or '-' (like {example}){plain}")
    };
    let mut octets = [0u8; N];
    if plain_allowed && bytes.len() == 2 * N && bytes.iter().all(u8::is_ascii_hexdigit) {
        for (octet, pair) in octets.iter_mut().zip(bytes.chunks(2)) {
            *octet = hex_pair(pair[0], pair[1]);
        }
        return Ok(octets);
    }
    if bytes.len() != 3 * N - 1 {
        return Err(shape());
    }
    let separator = bytes[2];
    for (position, &byte) in bytes.iter().enumerate() {
        let is_separator_slot = position % 3 == 2;
        let is_hex = byte.is_ascii_hexdigit();
        if is_separator_slot == is_hex {
            return Err(shape());
        }
        if is_separator_slot && byte != separator {
            return Err("mixes ':' and '-' separators".to_owned());
        }
    }
    for (index, octet) in octets.iter_mut().enumerate() {
        *octet = hex_pair(bytes[3 * index], bytes[3 * index + 1]);
    }
    Ok(octets)
}

/// Both bytes must be ASCII hex digits (the callers check this first).
fn hex_pair(high: u8, low: u8) -> u8 {
    (hex_digit(high) << 4) | hex_digit(low)
}

fn hex_digit(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

/// Either kind of identity, for code that treats MACs and WWNs alike (ownership, pools, errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Identity {
    Mac(Mac),
    Wwn(Wwn),
}

impl Identity {
    pub fn kind(&self) -> IdentityKind {
        match self {
            Identity::Mac(_) => IdentityKind::Mac,
            Identity::Wwn(_) => IdentityKind::Wwn,
        }
    }

    pub fn as_u64(&self) -> u64 {
        match self {
            Identity::Mac(mac) => mac.as_u64(),
            Identity::Wwn(wwn) => wwn.as_u64(),
        }
    }

    pub fn from_kind_u64(kind: IdentityKind, value: u64) -> Result<Identity, IdentityError> {
        match kind {
            IdentityKind::Mac => Mac::from_u64(value).map(Identity::Mac),
            IdentityKind::Wwn => Wwn::from_u64(value).map(Identity::Wwn),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Mac(mac) => write!(f, "MAC {mac}"),
            Identity::Wwn(wwn) => write!(f, "WWN {wwn}"),
        }
    }
}

macro_rules! serde_as_string {
    ($type:ty, $expecting:literal) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$type, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $type;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$type, E> {
                        text.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

serde_as_string!(Mac, "a MAC address string like \"02:00:00:00:00:01\"");
serde_as_string!(Wwn, "a WWN string like \"20:00:00:00:00:00:00:01\"");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_accepts_both_separators_and_any_case() {
        let cases = [
            ("02:00:00:00:00:01", "02:00:00:00:00:01"),
            ("02-00-00-00-00-01", "02:00:00:00:00:01"),
            ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
            ("aA-bB-cC-dD-eE-fF", "aa:bb:cc:dd:ee:ff"),
            ("00:00:00:00:00:01", "00:00:00:00:00:01"),
            ("fe:ff:ff:ff:ff:ff", "fe:ff:ff:ff:ff:ff"),
        ];
        for (text, canonical) in cases {
            let mac: Mac = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(mac.to_string(), canonical, "{text}");
            assert_eq!(canonical.parse::<Mac>(), Ok(mac), "{text}");
        }
    }

    #[test]
    fn mac_rejects_with_reason() {
        let cases = [
            ("", "expected 6 two-digit hex octets"),
            ("02:00:00:00:00", "expected 6"),
            ("02:00:00:00:00:01:02", "expected 6"),
            ("020000000001", "expected 6"),
            ("02:00:00:00:00:0g", "contains 'g'"),
            ("02:00:00:00:00:0é", "contains 'é'"),
            (" 02:00:00:00:00:01", "contains ' '"),
            ("02:00-00:00:00:01", "mixes ':' and '-'"),
            ("020:00:00:00:0:01", "expected 6"),
            ("02::00:00:00:0001", "expected 6"),
            ("00:00:00:00:00:00", "all-zero"),
            ("ff:ff:ff:ff:ff:ff", "broadcast"),
            ("01:00:5e:00:00:01", "multicast"),
            ("03:00:00:00:00:01", "I/G bit"),
        ];
        for (text, reason) in cases {
            let err = text.parse::<Mac>().expect_err(text);
            assert_eq!(err.kind, IdentityKind::Mac);
            assert_eq!(err.value, text);
            assert!(err.reason.contains(reason), "{text}: {}", err.reason);
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid MAC {text:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn mac_u64_round_trip_and_range() {
        let mac: Mac = "02:12:34:56:78:9a".parse().expect("valid literal");
        assert_eq!(mac.as_u64(), 0x0212_3456_789a);
        assert_eq!(Mac::from_u64(0x0212_3456_789a), Ok(mac));
        assert_eq!(mac.octets(), [0x02, 0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(mac.first_octet(), 0x02);
        assert!(Mac::from_u64(1 << 48)
            .expect_err("49 bits")
            .reason
            .contains("48 bits"));
        assert!(Mac::from_u64(0).is_err());
        assert!(Mac::from_u64(0x0100_0000_0000).is_err());
    }

    #[test]
    fn wwn_accepts_separated_and_plain_forms() {
        let cases = [
            ("20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:00:01"),
            ("20-00-00-25-B5-00-00-01", "20:00:00:25:b5:00:00:01"),
            ("20000025B5000001", "20:00:00:25:b5:00:00:01"),
            ("10:00:00:25:b5:00:00:01", "10:00:00:25:b5:00:00:01"),
            ("3fffffffffffffff", "3f:ff:ff:ff:ff:ff:ff:ff"),
            ("50:06:01:60:3b:20:19:2c", "50:06:01:60:3b:20:19:2c"),
        ];
        for (text, canonical) in cases {
            let wwn: Wwn = text.parse().unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(wwn.to_string(), canonical, "{text}");
            assert_eq!(canonical.parse::<Wwn>(), Ok(wwn), "{text}");
        }
    }

    #[test]
    fn wwn_rejects_with_reason() {
        let cases = [
            ("", "expected 8 two-digit hex octets"),
            ("20:00:00:25:b5:00:00", "expected 8"),
            ("20000025b500000", "16 plain hex digits"),
            ("20000025b50000011", "expected 8"),
            ("20:00:00:25:b5:00:00:0x", "contains 'x'"),
            ("20:00:00:25-b5:00:00:01", "mixes"),
            ("00:00:00:00:00:00:00:00", "all zeros"),
            ("0000000000000001", "NAA 0"),
            ("40:00:00:25:b5:00:00:01", "NAA 4"),
            ("60:00:00:25:b5:00:00:01", "NAA 6"),
            ("c0:00:00:25:b5:00:00:01", "NAA 12"),
            ("11:00:00:25:b5:00:00:01", "NAA 1 (IEEE 48-bit)"),
            ("10:01:00:25:b5:00:00:01", "12 bits after the NAA nibble"),
        ];
        for (text, reason) in cases {
            let err = text.parse::<Wwn>().expect_err(text);
            assert_eq!(err.kind, IdentityKind::Wwn);
            assert_eq!(err.value, text);
            assert!(err.reason.contains(reason), "{text}: {}", err.reason);
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid WWN {text:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn wwn_naa_and_u64() {
        let wwn: Wwn = "5006016039a0192c".parse().expect("valid literal");
        assert_eq!(wwn.naa(), 5);
        assert_eq!(wwn.as_u64(), 0x5006_0160_39a0_192c);
        assert_eq!(Wwn::from_u64(wwn.as_u64()), Ok(wwn));
        let err = Wwn::from_u64(0x7000_0000_0000_0001).expect_err("NAA 7");
        assert_eq!(err.value, "70:00:00:00:00:00:00:01");
    }

    #[test]
    fn serde_uses_canonical_strings() {
        let mac: Mac = "02-AB-00-00-00-01".parse().expect("valid literal");
        assert_eq!(
            serde_json::to_string(&mac).expect("serialize"),
            "\"02:ab:00:00:00:01\""
        );
        assert_eq!(
            serde_json::from_str::<Mac>("\"02-ab-00-00-00-01\"").expect("deserialize"),
            mac
        );
        let wwn: Wwn = "2000000000000001".parse().expect("valid literal");
        assert_eq!(
            serde_json::to_string(&wwn).expect("serialize"),
            "\"20:00:00:00:00:00:00:01\""
        );
        assert_eq!(
            serde_json::from_str::<Wwn>("\"20:00:00:00:00:00:00:01\"").expect("deserialize"),
            wwn
        );
        let err = serde_json::from_str::<Mac>("\"ff:ff:ff:ff:ff:ff\"").expect_err("broadcast");
        assert!(err.to_string().contains("broadcast"), "{err}");
        assert!(serde_json::from_str::<Wwn>("42").is_err());
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let long = "z".repeat(10_000);
        let err = long.parse::<Mac>().expect_err("garbage");
        assert_eq!(err.value.chars().count(), VALUE_SHOWN_LEN_MAX + 1);
        assert!(err.value.ends_with('…'));
    }
}
