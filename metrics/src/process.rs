//! The standard `process_*` metrics (the names every Prometheus client library exports, so the
//! usual dashboards work) read from `/proc/self` at each scrape, and `vnet_build_info`.
//!
//! On a system without `/proc` the process families are simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's USER_HZ, fixed at 100 in its
/// user-space ABI on every architecture Linux exports it for.
const USER_HZ: f64 = 100.0;

/// Registers the process collector in `registry` (the root one: the names carry no prefix).
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

/// Registers `vnet_build_info{version, program} 1` in `registry` (one already prefixed `vnet`).
pub fn register_build_info(registry: &mut Registry, program: &'static str, version: &'static str) {
    registry.register(
        "build",
        "The program and version of this build; always 1",
        Info::new(vec![("program", program), ("version", version)]),
    );
}

#[derive(Debug)]
struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub resident_memory_bytes: i64,
    pub virtual_memory_bytes: i64,
    pub open_fds: i64,
    pub max_fds: Option<i64>,
}

impl ProcessSample {
    /// Reads `/proc/self`; `None` where it cannot be read or parsed.
    pub fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let (utime, stime, start_ticks) = parse_stat(&stat)?;
        let boot_time_seconds: f64 = boot
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| parse_max_open_files(&limits));
        Some(ProcessSample {
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
            start_time_seconds: boot_time_seconds + start_ticks as f64 / USER_HZ,
            resident_memory_bytes: status_kib(&status, "VmRSS:")? * 1024,
            virtual_memory_bytes: status_kib(&status, "VmSize:")? * 1024,
            open_fds,
            max_fds,
        })
    }
}

/// utime, stime and starttime from `/proc/self/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // after_name starts at field 3 (state); utime is field 14, stime 15, starttime 22.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(22)?))
}

fn status_kib(status: &str, key: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = ProcessSample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, f64); 4] = [
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(Unit::Seconds),
                sample.start_time_seconds,
            ),
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                sample.resident_memory_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                sample.virtual_memory_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                sample.open_fds as f64,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                gauge.metric_type(),
            )?)?;
        }
        if let Some(max_fds) = sample.max_fds {
            let gauge = ConstGauge::new(max_fds as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let stat = "4242 (a) b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    123456 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((250, 50, 123456)));
    }

    #[test]
    fn parses_limits_and_status() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(status_kib("VmRSS:\t   2048 kB\n", "VmRSS:"), Some(2048));
    }

    #[test]
    fn reads_this_process() {
        let sample = ProcessSample::read().expect("/proc/self is readable on Linux");
        assert!(sample.resident_memory_bytes > 0);
        assert!(sample.open_fds >= 3, "stdin, stdout, stderr at least");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            sample.start_time_seconds <= now + 1.0 && sample.start_time_seconds > now - 86_400.0,
            "{sample:?}"
        );
    }
}
