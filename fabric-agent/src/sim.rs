//! [`SimDriver`]: the [`FabricDriver`] for the simulated switch, a gRPC client of
//! `vnet-switchd`. It also reads the switch's journal, for tests and the chaos harness.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use vnet_proto::vnet::switch::v1 as pb;
use vnet_proto::vnet::switch::v1::switch_client::SwitchClient;

use crate::convert::{program_from_wire, program_request};
use crate::driver::{DriverError, FabricDriver};
use crate::journal::Record;
use crate::program::{PortMap, PortProgram, SwitchState};

/// How long one call to the switch may take, connection included. Well under the 1 s default
/// lease: an arm that takes longer is of little use, and the reconcile loop must get back to
/// renewing.
pub const SWITCH_CALL_TIMEOUT_MS: u64 = 1_000;

/// How long opening a connection to the switch may take.
pub const SWITCH_CONNECT_TIMEOUT_MS: u64 = 500;

/// A client of one `vnet-switchd`. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct SimDriver {
    addr: String,
    client: SwitchClient<Channel>,
}

impl SimDriver {
    /// A driver for the switch at `addr` (`host:port`, or a `http://` URI). Connects on first
    /// use and reconnects after failures, so a switch that is down or restarting is reported
    /// call by call as [`DriverError::Unreachable`]. Must be called inside a Tokio runtime.
    pub fn connect_lazy(addr: &str) -> Result<Self, DriverError> {
        Self::connect_lazy_with(addr, None)
    }

    /// Like [`SimDriver::connect_lazy`], over mutual TLS if `tls` is given: the switch must
    /// present a certificate from the cluster CA naming `addr`'s host, and sees this unit's
    /// node certificate (the only one it accepts).
    pub fn connect_lazy_with(
        addr: &str,
        tls: Option<std::sync::Arc<vnet_tls::ClientTls>>,
    ) -> Result<Self, DriverError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| DriverError::InvalidAddress {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(SWITCH_CONNECT_TIMEOUT_MS))
            .timeout(Duration::from_millis(SWITCH_CALL_TIMEOUT_MS));
        let channel = match tls {
            Some(tls) => endpoint.connect_with_connector_lazy(vnet_tls::Connector::new(tls)),
            None => endpoint.connect_lazy(),
        };
        Ok(SimDriver {
            addr: addr.to_owned(),
            client: SwitchClient::new(channel),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The switch's full state as it answers it: adapter slots, capacity, instance, its clock.
    pub async fn raw_state(&self) -> Result<pb::GetStateResponse, DriverError> {
        self.client
            .clone()
            .get_state(pb::GetStateRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.error("GetState", status))
    }

    /// One page of journal records from `from_seq` (at most `JOURNAL_PAGE_RECORDS_MAX`), and
    /// the sequence number to ask for next.
    pub async fn read_journal(&self, from_seq: u64) -> Result<(Vec<Record>, u64), DriverError> {
        let reply = self
            .client
            .clone()
            .read_journal(pb::ReadJournalRequest {
                from_seq,
                max_records: 0,
            })
            .await
            .map_err(|status| self.error("ReadJournal", status))?
            .into_inner();
        let records = reply
            .records
            .iter()
            .map(|record| {
                serde_json::from_str::<Record>(&record.json).map_err(|e| DriverError::BadReply {
                    addr: self.addr.clone(),
                    what: format!("journal record {}", record.seq),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, reply.next_seq))
    }

    /// Every journal record from `from_seq` on, page by page, up to the end at the time asked.
    pub async fn read_journal_all(&self, from_seq: u64) -> Result<Vec<Record>, DriverError> {
        let mut all = Vec::new();
        let mut next = from_seq;
        loop {
            let (page, after) = self.read_journal(next).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
            next = after;
        }
    }

    /// A refusal keeps the switch's code and message; a transport failure says where and what.
    fn error(&self, call: &str, status: Status) -> DriverError {
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                DriverError::Unreachable(format!(
                    "{call} to switch at {}: {}",
                    self.addr,
                    status.message()
                ))
            }
            code => DriverError::Refused {
                code: vnet_proto::code_name(code).to_owned(),
                message: status.message().to_owned(),
            },
        }
    }
}

impl FabricDriver for SimDriver {
    async fn state(&self) -> Result<SwitchState, DriverError> {
        let reply = self.raw_state().await?;
        let mut ports = PortMap::new();
        for port in reply.ports.iter().filter(|port| port.programmed) {
            let bad = |what: String, reason: String| DriverError::BadReply {
                addr: self.addr.clone(),
                what,
                reason,
            };
            let number = u8::try_from(port.host_port).map_err(|_| {
                bad(
                    "host_port".to_owned(),
                    format!("{} is not a host port", port.host_port),
                )
            })?;
            let functions: Vec<pb::Function> = port
                .functions
                .iter()
                .map(|presented| presented.function.clone().unwrap_or_default())
                .collect();
            let program = program_from_wire(&port.profile, port.revision, &functions)
                .map_err(|e| bad(format!("program of host port {number}"), e.to_string()))?;
            ports.insert(number, program);
        }
        Ok(SwitchState {
            ports,
            watchdog_deadline_mono_ns: reply.watchdog_deadline_mono_ns,
            fenced: reply.fenced,
        })
    }

    async fn program(&self, port: u8, program: &PortProgram) -> Result<(), DriverError> {
        self.client
            .clone()
            .program(program_request(port, program))
            .await
            .map(drop)
            .map_err(|status| self.error(&format!("Program host port {port}"), status))
    }

    async fn clear(&self, port: u8) -> Result<(), DriverError> {
        self.client
            .clone()
            .clear(pb::ClearRequest {
                host_port: u32::from(port),
            })
            .await
            .map(drop)
            .map_err(|status| self.error(&format!("Clear host port {port}"), status))
    }

    async fn clear_all(&self) -> Result<(), DriverError> {
        self.client
            .clone()
            .clear_all(pb::ClearAllRequest {})
            .await
            .map(drop)
            .map_err(|status| self.error("ClearAll", status))
    }

    async fn arm_watchdog(&self, deadline_mono_ns: u64) -> Result<(), DriverError> {
        self.client
            .clone()
            .arm_watchdog(pb::ArmWatchdogRequest { deadline_mono_ns })
            .await
            .map(drop)
            .map_err(|status| self.error("ArmWatchdog", status))
    }
}
