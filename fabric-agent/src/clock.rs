//! The clocks: CLOCK_MONOTONIC, which the agent and the switch share, and the wall clock, which
//! only labels journal records for people.

use nix::time::{clock_gettime, ClockId};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC in nanoseconds: the clock lease deadlines are named on.
///
/// Every process on the machine (and every network namespace: namespaces do not virtualise this
/// clock) reads the same value, so an agent can hand the switch an *absolute* deadline. It never
/// jumps with NTP or an operator setting the date, so a deadline cannot be moved by accident.
/// `std::time::Instant` reads the same clock but keeps the number private.
pub fn monotonic_now_ns() -> u64 {
    // clock_gettime fails only with EINVAL (unknown clock; CLOCK_MONOTONIC exists on every Linux)
    // or EFAULT (bad pointer; nix passes its own), so this cannot fail.
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    // Monotonic time counts from boot and is never negative.
    let seconds = u64::try_from(now.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
    seconds * NANOS_PER_SECOND + nanos
}

/// Unix time in milliseconds, for people reading journals; never used to order anything.
pub fn wall_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_counts_nanoseconds() {
        // Instant reads the same clock; a wrong unit (µs, ms) or clock would break the bounds.
        let span = std::time::Duration::from_millis(2);
        let before = monotonic_now_ns();
        let started = std::time::Instant::now();
        while started.elapsed() < span {
            std::hint::spin_loop();
        }
        let after = monotonic_now_ns();
        let span_ns = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
        assert!(after - before >= span_ns, "{after} - {before} < {span_ns}");
        assert!(
            after - before < 15_000 * span_ns,
            "{after} - {before} is far beyond {span_ns}"
        );
    }
}
