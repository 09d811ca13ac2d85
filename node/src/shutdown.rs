//! Stopping the node: one [`Shutdown`] that `run` triggers once, and a [`ShutdownSignal`] held by
//! every server and long-running task, which awaits it. A trigger is never missed: a task that
//! starts waiting after it returns at once.

use tokio::sync::watch;

/// The trigger, held by whoever decides that the node stops.
#[derive(Debug)]
pub struct Shutdown {
    triggered: watch::Sender<bool>,
}

/// The receiving side: cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    triggered: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            triggered: watch::channel(false).0,
        }
    }

    /// A signal for one more task.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            triggered: self.triggered.subscribe(),
        }
    }

    /// Tells every task to stop. Triggering again does nothing.
    pub fn trigger(&self) {
        self.triggered.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// Returns once shutdown is triggered (at once if it already was). Also returns if the
    /// [`Shutdown`] is dropped without a trigger: nobody could stop the task any more.
    pub async fn recv(&mut self) {
        let _ = self.triggered.wait_for(|triggered| *triggered).await;
    }

    /// [`ShutdownSignal::recv`] without holding `self` mutably: for `select!` arms and server
    /// shutdown futures.
    pub fn triggered(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut signal = self.clone();
        async move { signal.recv().await }
    }

    pub fn is_triggered(&self) -> bool {
        *self.triggered.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_signal_sees_one_trigger_even_a_late_one() {
        let shutdown = Shutdown::new();
        let mut early = shutdown.signal();
        assert!(!early.is_triggered());
        let waiting = tokio::spawn(async move { early.recv().await });
        shutdown.trigger();
        shutdown.trigger();
        waiting.await.expect("the early signal returns");
        let mut late = shutdown.signal();
        assert!(late.is_triggered());
        late.recv().await;
        shutdown.signal().triggered().await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_releases_its_waiters() {
        let shutdown = Shutdown::new();
        let mut signal = shutdown.signal();
        drop(shutdown);
        signal.recv().await;
    }
}
