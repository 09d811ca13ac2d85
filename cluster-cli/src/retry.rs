//! Endpoint failover: send each request to the first endpoint that answers.
//!
//! The policy lives here, apart from gRPC, so it is tested with scripted fake endpoints:
//!
//! - Endpoints are tried in order, starting with the one that answered last (so a session sticks
//!   to a working node instead of retrying a dead first entry on every call).
//! - A failed connection, a transport error (whatever code the client library gave it: a
//!   connection cut mid-call surfaces as `UNKNOWN` "h2 protocol error"), or an `UNAVAILABLE`
//!   status moves on to the next endpoint. Every node forwards writes to the leader, so any
//!   live node will do.
//! - A timeout moves on only for reads: a write that timed out may still commit, and sending it
//!   again elsewhere could apply it twice (or answer a confusing `ALREADY_EXISTS`).
//! - Any other status is the cluster's answer and is returned at once.
//! - When every endpoint fails: if at least one node answered `UNAVAILABLE` itself (it is up but
//!   sees no leader), that status is returned, since the cluster was reached; otherwise the
//!   result is `Unreachable` with each endpoint's reason.

use std::future::Future;
use std::time::Duration;

use crate::error::{code_name, CliError, EndpointFailure};

/// How to open a connection to one endpoint. Implemented over tonic channels for real use and
/// by scripted fakes in tests.
pub trait Connector {
    type Conn: Clone + Send;
    fn connect(&self, endpoint: &str) -> impl Future<Output = Result<Self::Conn, String>> + Send;

    /// What the operator can do about a transport failure described by `error`, if the
    /// connector can tell (a server that wants TLS, a certificate it refused).
    fn hint(&self, _error: &str) -> Option<&'static str> {
        None
    }
}

/// Whether a request may be sent again to another node after it timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Changes nothing; safe to repeat anywhere.
    Read,
    /// Changes state; repeated only when it surely did not reach a server that could apply it.
    Write,
}

/// The endpoints of one session, with their connections opened lazily and kept for reuse.
#[derive(Clone)]
pub struct Failover<C: Connector> {
    connector: C,
    endpoints: Vec<String>,
    connections: Vec<Option<C::Conn>>,
    /// Index of the endpoint that answered last; the next request starts there.
    preferred: usize,
    timeout: Duration,
}

impl<C: Connector> Failover<C> {
    pub fn new(connector: C, endpoints: Vec<String>, timeout: Duration) -> Self {
        assert!(
            !endpoints.is_empty(),
            "the endpoint parser rejects an empty list"
        );
        let connections = vec![None; endpoints.len()];
        Failover {
            connector,
            endpoints,
            connections,
            preferred: 0,
            timeout,
        }
    }

    /// The endpoint the next request will try first.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.preferred]
    }

    /// Makes the next request start at endpoint `index` (modulo their number): how a set of
    /// workers spreads over every endpoint, as real clients do, rather than all asking the first.
    pub fn prefer(&mut self, index: usize) {
        self.preferred = index % self.endpoints.len();
    }

    /// How many endpoints the session knows.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Makes the next search start at the endpoint after the current one, with a fresh
    /// connection: for when the current node ended a stream and may be going down.
    pub fn skip_current(&mut self) {
        self.connections[self.preferred] = None;
        self.preferred = (self.preferred + 1) % self.endpoints.len();
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request, failing over as described in the module documentation. `call` is
    /// invoked once per endpoint tried, with that endpoint's connection.
    pub async fn call<T, F, Fut>(&mut self, kind: CallKind, mut call: F) -> Result<T, CliError>
    where
        F: FnMut(C::Conn) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut failures = Vec::new();
        let mut server_unavailable: Option<(tonic::Status, String)> = None;
        let count = self.endpoints.len();
        for step in 0..count {
            let index = (self.preferred + step) % count;
            let endpoint = self.endpoints[index].clone();
            let conn = match self.connection(index).await {
                Ok(conn) => conn,
                Err(reason) => {
                    failures.push(EndpointFailure { endpoint, reason });
                    continue;
                }
            };
            let outcome = tokio::time::timeout(self.timeout, call(conn)).await;
            match outcome {
                Ok(Ok(value)) => {
                    self.preferred = index;
                    return Ok(value);
                }
                Ok(Err(status))
                    if status.code() == tonic::Code::Unavailable || is_transport_error(&status) =>
                {
                    // The connection may be the thing that broke; open a fresh one next time.
                    self.connections[index] = None;
                    let mut reason = format!("{}: {}", code_name(status.code()), status.message());
                    if is_transport_error(&status) {
                        // The cause is in the source chain ("transport error" says nothing).
                        let mut cause = std::error::Error::source(&status);
                        while let Some(error) = cause {
                            let text = error.to_string();
                            if !reason.contains(&text) {
                                reason.push_str(": ");
                                reason.push_str(&text);
                            }
                            cause = error.source();
                        }
                        if let Some(hint) = self.connector.hint(&reason) {
                            reason.push_str(&format!(" ({hint})"));
                        }
                        failures.push(EndpointFailure { endpoint, reason });
                    } else {
                        failures.push(EndpointFailure {
                            endpoint: endpoint.clone(),
                            reason,
                        });
                        server_unavailable = Some((status, endpoint));
                    }
                }
                Ok(Err(status)) => {
                    self.preferred = index;
                    return Err(CliError::Rejected {
                        code: status.code(),
                        message: status.message().to_string(),
                        endpoint,
                    });
                }
                Err(_elapsed) => {
                    let reason = format!("no answer within {:?}", self.timeout);
                    if kind == CallKind::Write {
                        return Err(CliError::Rejected {
                            code: tonic::Code::DeadlineExceeded,
                            message: format!(
                                "{reason}; the write may or may not have been applied"
                            ),
                            endpoint,
                        });
                    }
                    self.connections[index] = None;
                    failures.push(EndpointFailure { endpoint, reason });
                }
            }
        }
        match server_unavailable {
            Some((status, endpoint)) => Err(CliError::Rejected {
                code: status.code(),
                message: status.message().to_string(),
                endpoint,
            }),
            None => Err(CliError::Unreachable { failures }),
        }
    }

    async fn connection(&mut self, index: usize) -> Result<C::Conn, String> {
        if let Some(conn) = &self.connections[index] {
            return Ok(conn.clone());
        }
        let endpoint = &self.endpoints[index];
        let conn = match tokio::time::timeout(self.timeout, self.connector.connect(endpoint)).await
        {
            Ok(result) => result?,
            Err(_elapsed) => return Err(format!("connect timed out after {:?}", self.timeout)),
        };
        self.connections[index] = Some(conn.clone());
        Ok(conn)
    }
}

/// A status the client library made up from a broken connection (it carries the underlying
/// error as its source), as opposed to one a server sent.
pub fn is_transport_error(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// Connects to any endpoint not listed as down, and counts connection attempts.
    #[derive(Clone, Default)]
    struct FakeConnector {
        down: Vec<&'static str>,
        connects: Arc<Mutex<HashMap<String, usize>>>,
    }

    impl Connector for FakeConnector {
        type Conn = String;
        fn connect(&self, endpoint: &str) -> impl Future<Output = Result<String, String>> + Send {
            *self
                .connects
                .lock()
                .unwrap()
                .entry(endpoint.to_string())
                .or_default() += 1;
            let result = if self.down.contains(&endpoint) {
                Err("connection refused".into())
            } else {
                Ok(endpoint.to_string())
            };
            std::future::ready(result)
        }
    }

    fn failover(down: Vec<&'static str>) -> Failover<FakeConnector> {
        Failover::new(
            FakeConnector {
                down,
                ..FakeConnector::default()
            },
            vec!["a:1".into(), "b:2".into(), "c:3".into()],
            Duration::from_millis(200),
        )
    }

    /// Answers with the endpoint's name, except where `answers` scripts a status.
    async fn scripted(
        conn: String,
        answers: &HashMap<&str, tonic::Status>,
        calls: &RefCell<Vec<String>>,
    ) -> Result<String, tonic::Status> {
        calls.borrow_mut().push(conn.clone());
        match answers.get(conn.as_str()) {
            Some(status) => Err(status.clone()),
            None => Ok(conn),
        }
    }

    #[tokio::test]
    async fn first_reachable_endpoint_answers_and_becomes_preferred() {
        let mut session = failover(vec!["a:1"]);
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::new();
        let answer = session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        assert_eq!(answer, "b:2");
        assert_eq!(session.current_endpoint(), "b:2");
        // The dead first entry is not retried on the next request.
        session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        assert_eq!(*calls.borrow(), vec!["b:2", "b:2"]);
        assert_eq!(session.connector.connects.lock().unwrap()["a:1"], 1);
        assert_eq!(
            session.connector.connects.lock().unwrap()["b:2"],
            1,
            "connection reused"
        );
    }

    #[tokio::test]
    async fn unavailable_status_moves_on_to_the_next_endpoint() {
        let mut session = failover(vec![]);
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::from([("a:1", tonic::Status::unavailable("no leader"))]);
        let answer = session
            .call(CallKind::Write, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        assert_eq!(answer, "b:2");
        assert_eq!(*calls.borrow(), vec!["a:1", "b:2"]);
    }

    #[tokio::test]
    async fn other_statuses_are_the_answer_and_stop_the_search() {
        let mut session = failover(vec![]);
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::from([("a:1", tonic::Status::not_found("profile \"x\""))]);
        let error = session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap_err();
        match error {
            CliError::Rejected {
                code,
                message,
                endpoint,
            } => {
                assert_eq!(code, tonic::Code::NotFound);
                assert_eq!(message, "profile \"x\"");
                assert_eq!(endpoint, "a:1");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(*calls.borrow(), vec!["a:1"]);
    }

    #[tokio::test]
    async fn nothing_reachable_lists_every_endpoint() {
        let mut session = failover(vec!["a:1", "b:2", "c:3"]);
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::new();
        let error = session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_UNREACHABLE);
        match error {
            CliError::Unreachable { failures } => {
                let endpoints: Vec<_> = failures.iter().map(|f| f.endpoint.as_str()).collect();
                assert_eq!(endpoints, vec!["a:1", "b:2", "c:3"]);
                assert!(failures.iter().all(|f| f.reason == "connection refused"));
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(calls.borrow().is_empty());
    }

    #[tokio::test]
    async fn a_node_without_leader_is_a_rejection_not_unreachable() {
        let mut session = failover(vec!["a:1", "c:3"]);
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::from([("b:2", tonic::Status::unavailable("no leader known"))]);
        let error = session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_REJECTED);
        assert!(error.to_string().contains("no leader known"), "{error}");
    }

    #[tokio::test]
    async fn transport_errors_count_as_unreachable() {
        let mut session = failover(vec!["b:2", "c:3"]);
        let calls = RefCell::new(Vec::new());
        // What tonic hands back when the connection breaks mid-call: UNAVAILABLE with the I/O
        // error attached as its source.
        let mut transport = tonic::Status::unavailable("transport error");
        transport.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        let answers = HashMap::from([("a:1", transport)]);
        let error = session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_UNREACHABLE);
    }

    #[tokio::test]
    async fn a_connection_cut_mid_call_moves_on_whatever_its_code() {
        let mut session = failover(vec![]);
        let calls = RefCell::new(Vec::new());
        let mut cut = tonic::Status::unknown("h2 protocol error: error reading a body");
        cut.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "eof",
        )));
        let answers = HashMap::from([("a:1", cut)]);
        let answer = session
            .call(CallKind::Write, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        assert_eq!(answer, "b:2");
        // The same code sent by a server is its answer.
        let mut session = failover(vec![]);
        let answers = HashMap::from([("a:1", tonic::Status::unknown("handler failed"))]);
        let error = session
            .call(CallKind::Write, |c| scripted(c, &answers, &calls))
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_REJECTED);
    }

    #[tokio::test]
    async fn a_read_that_times_out_fails_over_but_a_write_does_not() {
        let slow = |conn: String| async move {
            if conn == "a:1" {
                std::future::pending::<()>().await;
            }
            Ok::<_, tonic::Status>(conn)
        };
        let mut session = failover(vec![]);
        assert_eq!(session.call(CallKind::Read, slow).await.unwrap(), "b:2");

        let mut session = failover(vec![]);
        let error = session.call(CallKind::Write, slow).await.unwrap_err();
        match error {
            CliError::Rejected { code, endpoint, .. } => {
                assert_eq!(code, tonic::Code::DeadlineExceeded);
                assert_eq!(endpoint, "a:1");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn skip_current_moves_on_and_reconnects_later() {
        let mut session = failover(vec![]);
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::new();
        session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        session.skip_current();
        assert_eq!(session.current_endpoint(), "b:2");
        session.skip_current();
        session.skip_current();
        assert_eq!(session.current_endpoint(), "a:1");
        session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        assert_eq!(
            session.connector.connects.lock().unwrap()["a:1"],
            2,
            "the skipped endpoint's connection was dropped"
        );
    }

    #[tokio::test]
    async fn search_starts_at_the_preferred_endpoint_and_wraps_around() {
        let mut session = failover(vec![]);
        session.preferred = 2;
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::from([("c:3", tonic::Status::unavailable("stepping down"))]);
        let answer = session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        assert_eq!(answer, "a:1");
        assert_eq!(*calls.borrow(), vec!["c:3", "a:1"]);
    }

    #[tokio::test]
    async fn workers_preferring_their_index_spread_over_every_endpoint() {
        let calls = RefCell::new(Vec::new());
        let answers = HashMap::new();
        let first_asked: Vec<String> = (0..5)
            .map(|worker| {
                let mut session = failover(vec![]);
                session.prefer(worker);
                session.current_endpoint().to_owned()
            })
            .collect();
        assert_eq!(first_asked, vec!["a:1", "b:2", "c:3", "a:1", "b:2"]);
        let mut session = failover(vec![]);
        session.prefer(4);
        let answer = session
            .call(CallKind::Read, |c| scripted(c, &answers, &calls))
            .await
            .unwrap();
        assert_eq!(answer, "b:2");
    }
}
