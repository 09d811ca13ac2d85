//! `endpoint health` and `endpoint status`: every endpoint asked on its own, at once, as
//! etcdctl's commands of the same names do. Other commands stop at the first endpoint that
//! answers; these exist to see each node, so one that does not answer is a row, not a retry.

use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

use crate::cli::EndpointCommand;
use crate::error::{code_name, CliError};
use crate::output::{Render, Table};
use crate::retry::Connector;
use crate::session::{request, GrpcConnector, Tls};
use crate::spec::Endpoints;
use crate::{emit, Context};

/// One endpoint's answer to the standard gRPC health check (`grpc.health.v1`, service "").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointHealth {
    pub endpoint: String,
    /// SERVING: the node knows a leader and has applied up to it.
    pub healthy: bool,
    pub took_ms: u64,
    /// The status reported when not SERVING, or why there was no answer.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EndpointHealthView {
    pub endpoints: Vec<EndpointHealth>,
}

/// One endpoint's own view of the cluster, read locally (not through the leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub id: Option<u64>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub data_dir_bytes: Option<u64>,
    pub is_leader: Option<bool>,
    pub leader_id: Option<u64>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub revision: Option<u64>,
    /// Raised alarms as `KIND@member`, e.g. `NOSPACE@unit-b`.
    pub alarms: Vec<String>,
    /// Why the endpoint did not answer.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EndpointStatusView {
    pub endpoints: Vec<EndpointStatus>,
}

pub async fn run(
    context: &Context,
    endpoints: &Endpoints,
    timeout: Duration,
    tls: Tls,
    command: EndpointCommand,
) -> Result<(), CliError> {
    let asked = endpoints.0.iter().map(|endpoint| {
        let tls = tls.clone();
        async move {
            let started = Instant::now();
            let channel = tokio::time::timeout(timeout, connect(endpoint, timeout, tls)).await;
            let channel = match channel {
                Ok(Ok(channel)) => Ok(channel),
                Ok(Err(reason)) => Err(reason),
                Err(_) => Err(format!("no connection within {} ms", timeout.as_millis())),
            };
            (endpoint.clone(), started, channel)
        }
    });
    let connected = futures::future::join_all(asked).await;
    match command {
        EndpointCommand::Health => {
            let checks = connected
                .into_iter()
                .map(|(endpoint, started, channel)| async move {
                    let answer = match channel {
                        Ok(channel) => check_health(channel, timeout).await,
                        Err(reason) => Err(reason),
                    };
                    health_row(endpoint, started.elapsed(), answer)
                });
            let view = EndpointHealthView {
                endpoints: futures::future::join_all(checks).await,
            };
            emit(context, &view)?;
            let bad = view.endpoints.iter().filter(|e| !e.healthy).count();
            verdict(bad, view.endpoints.len(), "unhealthy")
        }
        EndpointCommand::Status => {
            let asked = connected
                .into_iter()
                .map(|(endpoint, _, channel)| async move {
                    let answer = match channel {
                        Ok(channel) => local_status(channel, timeout).await,
                        Err(reason) => Err(reason),
                    };
                    status_row(endpoint, answer)
                });
            let view = EndpointStatusView {
                endpoints: futures::future::join_all(asked).await,
            };
            emit(context, &view)?;
            let bad = view.endpoints.iter().filter(|e| e.error.is_some()).count();
            verdict(bad, view.endpoints.len(), "did not answer")
        }
    }
}

async fn connect(endpoint: &str, timeout: Duration, tls: Tls) -> Result<Channel, String> {
    GrpcConnector::new(timeout, tls).connect(endpoint).await
}

async fn check_health(channel: Channel, timeout: Duration) -> Result<(), String> {
    let message = HealthCheckRequest {
        service: String::new(),
    };
    let response = HealthClient::new(channel)
        .check(request(message, timeout))
        .await
        .map_err(|status| format!("{}: {}", code_name(status.code()), status.message()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!(
            "{}: no known leader, not caught up, or stopping (see `vnetctl status --local`)",
            other.as_str_name()
        )),
    }
}

async fn local_status(
    channel: Channel,
    timeout: Duration,
) -> Result<pb::GetClusterStatusResponse, String> {
    let message = pb::GetClusterStatusRequest {
        consistency: pb::ReadConsistency::Local as i32,
    };
    ClusterServiceClient::new(channel)
        .get_cluster_status(request(message, timeout))
        .await
        .map(|response| response.into_inner())
        .map_err(|status| format!("{}: {}", code_name(status.code()), status.message()))
}

fn health_row(endpoint: String, took: Duration, answer: Result<(), String>) -> EndpointHealth {
    EndpointHealth {
        endpoint,
        healthy: answer.is_ok(),
        took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        error: answer.err(),
    }
}

fn status_row(
    endpoint: String,
    answer: Result<pb::GetClusterStatusResponse, String>,
) -> EndpointStatus {
    match answer {
        Ok(status) => EndpointStatus {
            endpoint,
            id: Some(status.responder_id),
            name: status
                .members
                .iter()
                .find(|m| m.id == status.responder_id)
                .map(|m| m.name.clone()),
            version: Some(status.version.clone()).filter(|v| !v.is_empty()),
            data_dir_bytes: Some(status.data_dir_bytes),
            is_leader: Some(status.leader_id == Some(status.responder_id)),
            leader_id: status.leader_id,
            term: Some(status.term),
            commit_index: Some(status.commit_index),
            applied_index: Some(status.applied_index),
            revision: Some(status.revision),
            alarms: status
                .alarms
                .iter()
                .map(|a| format!("{}@{}", alarm_name(a.kind), a.member))
                .collect(),
            error: None,
        },
        Err(reason) => EndpointStatus {
            endpoint,
            id: None,
            name: None,
            version: None,
            data_dir_bytes: None,
            is_leader: None,
            leader_id: None,
            term: None,
            commit_index: None,
            applied_index: None,
            revision: None,
            alarms: Vec::new(),
            error: Some(reason),
        },
    }
}

/// Exit 0 when every endpoint is fine, else an error counting the others (exit 1).
fn verdict(bad: usize, total: usize, what: &str) -> Result<(), CliError> {
    if bad == 0 {
        Ok(())
    } else {
        Err(CliError::Unhealthy(format!(
            "{bad} of {total} endpoint(s) {what}"
        )))
    }
}

/// An alarm kind as operators read it, e.g. `NOSPACE`.
fn alarm_name(kind: i32) -> String {
    match pb::AlarmKind::try_from(kind) {
        Ok(pb::AlarmKind::Nospace) => "NOSPACE".to_owned(),
        _ => format!("ALARM_{kind}"),
    }
}

fn dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A byte count as an operator reads it: 532 B, 1.4 MiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Render for EndpointHealthView {
    fn text(&self) -> String {
        let mut table = Table::new(vec!["ENDPOINT", "HEALTHY", "TOOK", "ERROR"]);
        for e in &self.endpoints {
            table.row(vec![
                e.endpoint.clone(),
                e.healthy.to_string(),
                format!("{}ms", e.took_ms),
                dash(e.error.as_ref()),
            ]);
        }
        table.render()
    }
}

impl Render for EndpointStatusView {
    fn text(&self) -> String {
        let mut table = Table::new(vec![
            "ENDPOINT", "ID", "NAME", "VERSION", "DATA DIR", "LEADER", "TERM", "COMMIT", "APPLIED",
            "REVISION", "ALARMS", "ERROR",
        ]);
        for e in &self.endpoints {
            let leader = match (e.is_leader, e.leader_id) {
                (Some(true), _) => "self".to_owned(),
                (_, Some(id)) => id.to_string(),
                (Some(false), None) => "none known".to_owned(),
                (None, _) => "-".to_owned(),
            };
            table.row(vec![
                e.endpoint.clone(),
                dash(e.id),
                dash(e.name.as_ref()),
                dash(e.version.as_ref()),
                dash(e.data_dir_bytes.map(bytes)),
                leader,
                dash(e.term),
                dash(e.commit_index),
                dash(e.applied_index),
                dash(e.revision),
                dash((!e.alarms.is_empty()).then(|| e.alarms.join(","))),
                dash(e.error.as_ref()),
            ]);
        }
        table.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_an_operator_expects() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn an_unreachable_endpoint_is_a_row_and_a_nonzero_exit() {
        let rows = [
            health_row("a:1".into(), Duration::from_millis(3), Ok(())),
            health_row(
                "b:2".into(),
                Duration::from_millis(7),
                Err("refused".into()),
            ),
        ];
        let text = EndpointHealthView {
            endpoints: rows.to_vec(),
        }
        .text();
        assert!(text.contains("a:1") && text.contains("true"), "{text}");
        assert!(text.contains("b:2") && text.contains("refused"), "{text}");
        let error = verdict(1, 2, "unhealthy").unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_REJECTED);
        assert_eq!(error.to_string(), "1 of 2 endpoint(s) unhealthy");
        assert!(verdict(0, 2, "unhealthy").is_ok());
    }

    #[test]
    fn a_raised_alarm_shows_in_the_row() {
        let status = pb::GetClusterStatusResponse {
            responder_id: 2,
            leader_id: Some(1),
            alarms: vec![pb::Alarm {
                member: "unit-b".into(),
                kind: pb::AlarmKind::Nospace as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let row = status_row("b:2".into(), Ok(status));
        assert_eq!(row.alarms, vec!["NOSPACE@unit-b"]);
        assert_eq!(row.is_leader, Some(false));
        let text = EndpointStatusView {
            endpoints: vec![row],
        }
        .text();
        assert!(text.contains("NOSPACE@unit-b"), "{text}");
    }
}
