//! The ways a `vnetctl` invocation can fail, and the exit code each one maps to.

use std::fmt;

/// The request was carried out (or the command ran to its end).
pub const EXIT_OK: u8 = 0;
/// A server answered with an error status (its code and message are printed), a wait for the
/// cluster to reach a state (`drain --wait`) gave up at its deadline, or `endpoint health` /
/// `endpoint status` found an endpoint unhealthy or unreachable.
pub const EXIT_REJECTED: u8 = 1;
/// The command line (or a `--file` given on it) is invalid; nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// No endpoint could be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// A local failure unrelated to the cluster's answer: an I/O error, or `demo` could not start
/// its `vnetd` and `vnet-switchd` processes.
pub const EXIT_LOCAL: u8 = 4;

/// Why one endpoint could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    pub endpoint: String,
    pub reason: String,
}

#[derive(Debug)]
pub enum CliError {
    /// Bad input, caught before anything was sent. The message names the flag and the value.
    Usage(String),
    /// A server's answer: a gRPC status code and its message.
    Rejected {
        code: tonic::Code,
        message: String,
        endpoint: String,
    },
    /// Every endpoint failed to connect (or answered only with transport errors).
    Unreachable { failures: Vec<EndpointFailure> },
    /// Anything else that went wrong on this side.
    Local(anyhow::Error),
    /// The cluster answered, but did not reach the state waited for (`drain --wait`) before the
    /// deadline. The message says what is still missing.
    Timeout(String),
    /// Some endpoints answered `endpoint health` or `endpoint status` as unhealthy or not at
    /// all; the table printed on stdout says which. The message counts them.
    Unhealthy(String),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Rejected { .. } => EXIT_REJECTED,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::Local(_) => EXIT_LOCAL,
            CliError::Timeout(_) | CliError::Unhealthy(_) => EXIT_REJECTED,
        }
    }

    /// Failures that a leader change or a node restart explains, worth retrying for a while.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CliError::Unreachable { .. }
                | CliError::Rejected {
                    code: tonic::Code::Unavailable | tonic::Code::DeadlineExceeded,
                    ..
                }
        )
    }

    /// The machine-readable form printed on stderr in `-o json` mode.
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, code, message) = match self {
            CliError::Usage(message) => ("usage", None, message.clone()),
            CliError::Rejected { code, message, .. } => {
                ("rejected", Some(code_name(*code)), message.clone())
            }
            CliError::Unreachable { .. } => ("unreachable", None, self.to_string()),
            CliError::Local(error) => ("local", None, format!("{error:#}")),
            CliError::Timeout(message) => ("timeout", None, message.clone()),
            CliError::Unhealthy(message) => ("unhealthy", None, message.clone()),
        };
        let mut error = serde_json::json!({ "kind": kind, "message": message });
        if let Some(code) = code {
            error["code"] = serde_json::Value::from(code);
        }
        if let CliError::Rejected { endpoint, .. } = self {
            error["endpoint"] = serde_json::Value::from(endpoint.clone());
        }
        serde_json::json!({ "error": error, "exit_code": self.exit_code() })
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message) => write!(f, "{message}"),
            CliError::Rejected {
                code,
                message,
                endpoint,
            } => write!(f, "{} from {endpoint}: {message}", code_name(*code)),
            CliError::Unreachable { failures } => {
                write!(f, "no endpoint reachable")?;
                for failure in failures {
                    write!(f, "\n  {}: {}", failure.endpoint, failure.reason)?;
                }
                Ok(())
            }
            CliError::Local(error) => write!(f, "{error:#}"),
            CliError::Timeout(message) | CliError::Unhealthy(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError::Local(error)
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Local(error.into())
    }
}

pub use vnet_proto::code_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_documented_exit_code() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        let rejected = CliError::Rejected {
            code: tonic::Code::NotFound,
            message: "profile \"x\" not found".into(),
            endpoint: "127.0.0.1:7001".into(),
        };
        assert_eq!(rejected.exit_code(), 1);
        assert_eq!(CliError::Unreachable { failures: vec![] }.exit_code(), 3);
        assert_eq!(CliError::Local(anyhow::anyhow!("disk")).exit_code(), 4);
        let timeout = CliError::Timeout("unit-a still presents web-01".into());
        assert_eq!(timeout.exit_code(), 1);
        assert_eq!(
            timeout.to_json(),
            serde_json::json!({
                "error": {"kind": "timeout", "message": "unit-a still presents web-01"},
                "exit_code": 1,
            })
        );
    }

    #[test]
    fn rejected_error_prints_code_name_and_message() {
        let rejected = CliError::Rejected {
            code: tonic::Code::Aborted,
            message: "expected revision 4, current 9".into(),
            endpoint: "10.0.0.1:7001".into(),
        };
        assert_eq!(
            rejected.to_string(),
            "ABORTED from 10.0.0.1:7001: expected revision 4, current 9"
        );
        assert_eq!(
            rejected.to_json(),
            serde_json::json!({
                "error": {
                    "kind": "rejected",
                    "code": "ABORTED",
                    "message": "expected revision 4, current 9",
                    "endpoint": "10.0.0.1:7001",
                },
                "exit_code": 1,
            })
        );
    }

    #[test]
    fn unreachable_error_lists_every_endpoint_tried() {
        let error = CliError::Unreachable {
            failures: vec![
                EndpointFailure {
                    endpoint: "a:1".into(),
                    reason: "connection refused".into(),
                },
                EndpointFailure {
                    endpoint: "b:2".into(),
                    reason: "timed out".into(),
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "no endpoint reachable\n  a:1: connection refused\n  b:2: timed out"
        );
    }
}
