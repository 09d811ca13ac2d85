//! What the store reports about its own work, for whoever runs it to measure (`vnetd` turns it
//! into metrics). The store calls these and knows nothing of what they do.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Told of every log sync and every snapshot build. Must be cheap: it runs on the write path.
pub trait StoreObserver: Debug + Send + Sync + 'static {
    /// A flush of the log database (its fsync) took `took`, successful or not.
    fn log_synced(&self, took: Duration);
    /// A snapshot of `bytes` was built and made durable in `took`.
    fn snapshot_built(&self, took: Duration, bytes: u64);
}

/// Observes nothing.
#[derive(Debug)]
pub struct Unobserved;

impl StoreObserver for Unobserved {
    fn log_synced(&self, _took: Duration) {}
    fn snapshot_built(&self, _took: Duration, _bytes: u64) {}
}

pub type SharedObserver = Arc<dyn StoreObserver>;
