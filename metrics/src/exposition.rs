//! One process's metrics as Prometheus reads them: a registry, a refresh hook, two formats.
//!
//! Values that are a view of some state (Raft's metrics, the applied model state, the switch's
//! ports) are not kept up to date on every change; the refresh hook sets them just before each
//! scrape, so they cost nothing between scrapes and are never stale when read. Counters and
//! histograms of events are updated where the event happens.
//!
//! Prometheus asks for OpenMetrics (its `Accept` header says so) and gets `prometheus-client`'s
//! encoding as it is. Anyone else gets the classic text format 0.0.4, which `promtool check
//! metrics`, `curl` and older scrapers read: the same samples, with counter and info families
//! named as their samples are (`x_total`, `x_info`), and without `# UNIT` and `# EOF`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Sets scrape-time values; called once per scrape, before encoding.
pub type Refresh = Box<dyn Fn() + Send + Sync>;

/// The two formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    /// OpenMetrics if the client accepts it (Prometheus does), else text 0.0.4.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(value) if value.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// A registry and the hook that refreshes it; what the metrics listener serves.
pub struct Exposition {
    registry: Registry,
    refresh: Option<Refresh>,
    /// One scrape at a time: a refresh may clear and refill a labelled family, and an encode
    /// running beside it would see the family half filled.
    scraping: Mutex<()>,
}

impl Exposition {
    pub fn new(registry: Registry, refresh: Option<Refresh>) -> Exposition {
        Exposition {
            registry,
            refresh,
            scraping: Mutex::new(()),
        }
    }

    /// Refreshes and encodes every metric.
    pub fn render(&self, format: Format) -> Result<String, std::fmt::Error> {
        // A panic in an earlier refresh leaves nothing inconsistent that this lock protects
        // (the next refresh sets every value again), so a poisoned lock is taken as is.
        let _scraping = self
            .scraping
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(refresh) = &self.refresh {
            refresh();
        }
        let mut openmetrics = String::new();
        encode(&mut openmetrics, &self.registry)?;
        Ok(match format {
            Format::OpenMetrics => openmetrics,
            Format::Text => openmetrics_to_text(&openmetrics),
        })
    }
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4 (see the module doc).
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut family_types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                family_types.insert(name, kind);
            }
        }
    }
    // The 0.0.4 name of a family and its type there.
    let renamed = |name: &str| -> (String, &'static str) {
        match family_types.get(name).copied() {
            Some("counter") => (format!("{name}_total"), "counter"),
            Some("info") => (format!("{name}_info"), "gauge"),
            Some("gauge") => (name.to_owned(), "gauge"),
            Some("histogram") => (name.to_owned(), "histogram"),
            Some("summary") => (name.to_owned(), "summary"),
            Some("stateset") => (name.to_owned(), "gauge"),
            _ => (name.to_owned(), "untyped"),
        }
    };
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, _) = renamed(name);
            text.push_str(&format!("# HELP {name} {help}\n"));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_once(' ').map_or(rest, |(name, _)| name);
            let (name, kind) = renamed(name);
            text.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with('#') {
            // `# UNIT` and `# EOF` have no 0.0.4 form.
        } else {
            // An exemplar (` # {...} value`) has no 0.0.4 form either.
            let sample = line.split_once(" # ").map_or(line, |(sample, _)| sample);
            text.push_str(sample);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::registry::Unit;

    use super::*;

    fn sample_registry() -> (Registry, Counter, Gauge) {
        let mut registry = Registry::default();
        let ours = registry.sub_registry_with_prefix(crate::PREFIX);
        let counter = Counter::default();
        ours.register("requests", "Requests served", counter.clone());
        let gauge = Gauge::default();
        ours.register("raft_term", "Current Raft term", gauge.clone());
        let histogram = Histogram::new([0.1, 1.0]);
        ours.register_with_unit(
            "fsync_duration",
            "Time to fsync",
            Unit::Seconds,
            histogram.clone(),
        );
        histogram.observe(0.5);
        ours.register("build", "Build", Info::new(vec![("version", "1.2.3")]));
        (registry, counter, gauge)
    }

    #[test]
    fn text_format_names_counters_and_info_as_their_samples() {
        let (registry, counter, _) = sample_registry();
        counter.inc();
        let exposition = Exposition::new(registry, None);
        let openmetrics = exposition.render(Format::OpenMetrics).unwrap();
        assert!(openmetrics.contains("# TYPE vnet_requests counter\n"));
        assert!(openmetrics.ends_with("# EOF\n"));

        let text = exposition.render(Format::Text).unwrap();
        assert!(text.contains("# HELP vnet_requests_total Requests served.\n"));
        assert!(text.contains("# TYPE vnet_requests_total counter\nvnet_requests_total 1\n"));
        assert!(
            text.contains("# TYPE vnet_build_info gauge\nvnet_build_info{version=\"1.2.3\"} 1\n")
        );
        assert!(text.contains("# TYPE vnet_fsync_duration_seconds histogram\n"));
        assert!(text.contains("vnet_fsync_duration_seconds_bucket{le=\"1.0\"} 1\n"));
        assert!(!text.contains("# UNIT"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn refresh_runs_before_every_scrape() {
        let (registry, _, gauge) = sample_registry();
        let refreshed = gauge.clone();
        let exposition = Exposition::new(
            registry,
            Some(Box::new(move || {
                refreshed.inc();
            })),
        );
        exposition.render(Format::Text).unwrap();
        let text = exposition.render(Format::Text).unwrap();
        assert!(text.contains("vnet_raft_term 2\n"), "{text}");
    }

    #[test]
    fn negotiates_openmetrics_only_when_asked() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }
}
