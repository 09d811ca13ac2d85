//! What a data-plane run concludes from its traffic and captures: the frame checks (one MAC
//! through one unit at a time, on its own segment, announced by the new unit) and the outage
//! figures.

use super::*;

/// Checks the uplink captures of one failover away from unit `from` (a fault at `fault_ns`;
/// the window `[window_start_ns, end_ns)`); returns the violations, each naming the profile:
/// a frame of a profile's MAC on another segment's uplink; no frame through the new unit
/// after the fault, or no announcement (RARP) of the MAC among them; a frame through the new
/// unit before the fault; and the data-plane form of
/// "never presented twice": a frame through the old unit at or after the first frame through
/// the new one.
pub fn check_frames(
    servers: &[ServerSpec],
    frames: &[Frame],
    from: usize,
    fault_ns: u64,
    window_start_ns: u64,
    end_ns: u64,
) -> Vec<String> {
    let mut violations = Vec::new();
    let to = 1 - from;
    for server in servers {
        let mine: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.src == server.mac && f.at_ns >= window_start_ns && f.at_ns < end_ns)
            .collect();
        if let Some(f) = mine.iter().find(|f| f.segment != server.segment) {
            violations.push(format!(
                "{}: a frame from {} on segment {:?}, not its own {:?}",
                server.profile,
                server.mac_text(),
                SEGMENTS[f.segment],
                SEGMENTS[server.segment]
            ));
        }
        let Some(first_via_to) = mine
            .iter()
            .filter(|f| f.unit == to && f.at_ns >= fault_ns)
            .map(|f| f.at_ns)
            .min()
        else {
            violations.push(format!(
                "{}: no frame from {} through {} after the fault",
                server.profile,
                server.mac_text(),
                UNITS[to]
            ));
            continue;
        };
        if let Some(last_via_from) = mine
            .iter()
            .filter(|f| f.unit == from)
            .map(|f| f.at_ns)
            .max()
        {
            if last_via_from >= first_via_to {
                violations.push(format!(
                    "{}: frames from {} through both units at once: through {} until {} ns, \
                     through {} from {} ns",
                    server.profile,
                    server.mac_text(),
                    UNITS[from],
                    last_via_from,
                    UNITS[to],
                    first_via_to
                ));
            }
        }
        if !mine
            .iter()
            .any(|f| f.unit == to && f.at_ns >= fault_ns && f.ethertype == ETHERTYPE_RARP)
        {
            violations.push(format!(
                "{}: {} took over {} without announcing it (no RARP frame from it)",
                server.profile,
                UNITS[to],
                server.mac_text()
            ));
        }
        if mine.iter().any(|f| f.unit == to && f.at_ns < fault_ns) {
            violations.push(format!(
                "{}: frames from {} through {} before the fault on {}",
                server.profile,
                server.mac_text(),
                UNITS[to],
                UNITS[from]
            ));
        }
    }
    violations
}

/// Order statistics of a list of durations (ms).
pub fn min_p50_max(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

/// The `q`-quantile (0..=1, nearest rank) of `values`; NaN if empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The largest gap (ms) between consecutive echoes of a server from the last echo before
/// `from_ns` (the fault) to `to_ns`, so an outage that begins at the fault is measured whole;
/// `None` if no echo came before the fault or none after it.
pub fn largest_gap_ms(times: &[u64], from_ns: u64, to_ns: u64) -> Option<f64> {
    let mut last = times.iter().rev().find(|t| **t <= from_ns).copied()?;
    let mut largest = 0u64;
    for &t in times.iter().filter(|t| **t > from_ns && **t <= to_ns) {
        largest = largest.max(t - last);
        last = t;
    }
    if last < from_ns {
        return None;
    }
    Some(largest as f64 / 1e6)
}

/// A socket-level helper for the report: the LAN host's neighbour entry of `addr`.
pub fn lan_neighbour(cluster: &DataPlaneCluster, addr: Ipv4Addr) -> anyhow::Result<String> {
    ipn(&cluster.ns("lan"), &["neigh", "show", &addr.to_string()])
}
