//! The switch as a model: host ports, adapter slots and the watchdog, with no I/O and no clock.
//!
//! Every method takes the current CLOCK_MONOTONIC time (`now_mono_ns`) explicitly, and every
//! change is described by journal [`Event`]s that pile up until [`Switch::take_events`]. The
//! server journals them (and only then answers), and tests read them. Methods are called one at
//! a time, in time order, under the server's lock.
//!
//! The watchdog is part of the model, not of the timer that ticks it: every method first applies
//! an expired deadline (clearing every port and recording `Fenced`) before doing anything else.
//! So what the switch does depends only on the calls and their times, never on whether the
//! watchdog thread happened to run first, and no call can ever act on a lease that has passed.

use std::collections::BTreeMap;

use vnet_model::limits::{
    HOST_PORTS_MAX, VHBAS_PER_PROFILE_MAX, VLAN_ID_MAX, VLAN_ID_MIN, VNICS_PER_PROFILE_MAX,
};
use vnet_model::name::validate_name;
use vnet_model::{Identity, Rejection};

use crate::journal::{canonical, ClearReason, Event};
use crate::program::{Function, PortProgram};

/// Adapter ports of one kind (Ethernet or FC) a switch may have.
pub const ADAPTER_PORTS_MAX: u8 = 16;

/// Virtual functions per Ethernet port, or NPIV logins per FC port, at most (SR-IOV allows 256
/// VFs per physical function; FC switches commonly allow 255 NPIV logins per port).
pub const SLOTS_PER_ADAPTER_PORT_MAX: u16 = 256;

const NANOS_PER_MILLI: u64 = 1_000_000;

/// How many adapter ports the switch has and what each can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub eth_ports: u8,
    pub vfs_per_eth_port: u16,
    pub fc_ports: u8,
    pub npiv_per_fc_port: u16,
}

/// Whether the watchdog fences. Anything but `Enforced` breaks invariant 2 and exists only so
/// chaos tests can prove their checker catches a double presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogMode {
    Enforced,
    /// TEST ONLY: the deadline is kept and reported, and still required to program, but passing
    /// it clears nothing.
    UnsafeDisabled,
}

/// A switch's fixed shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchSpec {
    /// Host port (1..=30) -> the rack server cabled to it. Uncabled ports cannot be programmed.
    pub cabling: BTreeMap<u8, String>,
    pub capacity: Capacity,
    pub watchdog: WatchdogMode,
}

/// One adapter resource: a VF on an Ethernet port, or an NPIV login on an FC port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    /// Adapter port of the function's kind, from 1.
    pub adapter_port: u8,
    /// VF or NPIV index on that adapter port, from 0.
    pub index: u16,
}

/// What a host port holds: a program and, for each of its functions in order, its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldProgram {
    pub program: PortProgram,
    pub slots: Vec<Slot>,
}

/// A cabled host port as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    pub port: u8,
    pub server: String,
    pub held: Option<HeldProgram>,
}

/// The whole switch as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateView {
    /// Every cabled host port, in port order.
    pub ports: Vec<PortView>,
    pub watchdog_deadline_mono_ns: Option<u64>,
    pub fenced: bool,
    pub capacity: Capacity,
    pub vfs_used: u32,
    pub npiv_used: u32,
    pub watchdog: WatchdogMode,
}

/// The result of arming the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmOutcome {
    /// The deadline in force: the latest ever given.
    pub deadline_mono_ns: u64,
    pub fenced: bool,
}

/// Why the switch refused a call. A refused call changed nothing (though a fence it applied on
/// the way in, because the deadline had passed, stands).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    #[error("host_port {port} is outside 1..={max}", max = HOST_PORTS_MAX)]
    PortOutOfRange { port: u32 },
    #[error(
        "host_port {port} is not cabled to any server on this switch (cabled ports: {cabled})"
    )]
    PortNotCabled { port: u8, cabled: String },
    /// `field` is a path into the request, like `functions[1].vnic.name`.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidArgument {
        field: String,
        value: String,
        reason: String,
    },
    #[error("too many {what} in one program: {count}, the limit is {limit}")]
    TooManyFunctions {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error(
        "watchdog not armed: this switch programs nothing without a live lease; \
         arm the watchdog with the lease deadline first"
    )]
    WatchdogNotArmed,
    #[error(
        "lease expired at {deadline_mono_ns} ns CLOCK_MONOTONIC ({} ms ago): this switch \
         programs nothing without a live lease; arm the watchdog with a renewed deadline first",
        .now_mono_ns.saturating_sub(*.deadline_mono_ns) / NANOS_PER_MILLI
    )]
    LeaseExpired {
        deadline_mono_ns: u64,
        now_mono_ns: u64,
    },
    /// `identity` is labelled ("MAC …", "WWN …"); `port` is the host port presenting it.
    #[error("{field}: {identity} is already presented on host port {port} (profile {profile:?})")]
    IdentityPresented {
        field: String,
        identity: String,
        port: u8,
        profile: String,
    },
    #[error(
        "no free virtual function on any Ethernet port: the program needs {needed}, \
         {free} of {total} are free"
    )]
    NoFreeVf {
        needed: usize,
        free: usize,
        total: usize,
    },
    /// The data plane could not present the program; the port was cleared.
    #[error("the data plane could not present host port {port}, now cleared: {reason}")]
    DataPlane { port: u8, reason: String },
    #[error(
        "no free NPIV login on any FC port: the program needs {needed}, {free} of {total} are free"
    )]
    NoFreeNpiv {
        needed: usize,
        free: usize,
        total: usize,
    },
}

impl From<Rejection> for SwitchError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::InvalidArgument {
                field,
                value,
                reason,
            } => SwitchError::InvalidArgument {
                field,
                value,
                reason,
            },
            other => SwitchError::InvalidArgument {
                field: String::new(),
                value: String::new(),
                reason: other.to_string(),
            },
        }
    }
}

/// The slots of one kind of adapter: `used[adapter port - 1][index]`.
#[derive(Debug, Clone)]
struct AdapterSlots {
    used: Vec<Vec<bool>>,
}

impl AdapterSlots {
    fn new(ports: u8, slots_per_port: u16) -> Self {
        AdapterSlots {
            used: vec![vec![false; usize::from(slots_per_port)]; usize::from(ports)],
        }
    }

    fn total(&self) -> usize {
        self.used.iter().map(Vec::len).sum()
    }

    fn in_use(&self) -> usize {
        self.used.iter().flatten().filter(|used| **used).count()
    }

    fn free(&self) -> usize {
        self.total() - self.in_use()
    }

    /// Takes the lowest free slot on the adapter port with the most free slots (the lowest
    /// such port on a tie), so functions spread over the adapter ports and a port failure takes
    /// down as few as possible.
    fn allocate(&mut self) -> Option<Slot> {
        let (port_index, slots) = self
            .used
            .iter_mut()
            .enumerate()
            .filter(|(_, slots)| slots.iter().any(|used| !used))
            .max_by_key(|(port_index, slots)| {
                let free = slots.iter().filter(|used| !**used).count();
                (free, std::cmp::Reverse(*port_index))
            })?;
        let index = slots.iter().position(|used| !used)?;
        slots[index] = true;
        Some(Slot {
            // Both fit: ports <= ADAPTER_PORTS_MAX and slots <= SLOTS_PER_ADAPTER_PORT_MAX.
            adapter_port: u8::try_from(port_index + 1).unwrap_or(u8::MAX),
            index: u16::try_from(index).unwrap_or(u16::MAX),
        })
    }

    fn release(&mut self, slot: Slot) {
        let used = &mut self.used[usize::from(slot.adapter_port) - 1][usize::from(slot.index)];
        assert!(
            *used,
            "releasing a free slot {slot:?}: the slot books are wrong"
        );
        *used = false;
    }
}

/// The switch model. See the module documentation.
#[derive(Debug, Clone)]
pub struct Switch {
    spec: SwitchSpec,
    ports: BTreeMap<u8, HeldProgram>,
    eth: AdapterSlots,
    fc: AdapterSlots,
    deadline_mono_ns: Option<u64>,
    fenced: bool,
    events: Vec<Event>,
}

impl Switch {
    /// A switch as after a reset: every port clear, the watchdog unarmed.
    pub fn new(spec: SwitchSpec) -> Switch {
        assert!(
            spec.cabling
                .keys()
                .all(|port| (1..=HOST_PORTS_MAX).contains(port)),
            "cabling names a host port outside 1..={HOST_PORTS_MAX}: config validation missed it"
        );
        let capacity = spec.capacity;
        assert!(
            capacity.eth_ports <= ADAPTER_PORTS_MAX
                && capacity.fc_ports <= ADAPTER_PORTS_MAX
                && capacity.vfs_per_eth_port <= SLOTS_PER_ADAPTER_PORT_MAX
                && capacity.npiv_per_fc_port <= SLOTS_PER_ADAPTER_PORT_MAX,
            "capacity {capacity:?} beyond the limits: config validation missed it"
        );
        Switch {
            eth: AdapterSlots::new(capacity.eth_ports, capacity.vfs_per_eth_port),
            fc: AdapterSlots::new(capacity.fc_ports, capacity.npiv_per_fc_port),
            spec,
            ports: BTreeMap::new(),
            deadline_mono_ns: None,
            fenced: false,
            events: Vec::new(),
        }
    }

    /// The events of every change since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Applies the watchdog: if the deadline has passed, clears every port and fences.
    pub fn tick(&mut self, now_mono_ns: u64) {
        self.expire(now_mono_ns);
    }

    /// Presents `program` on host `port`, replacing what it holds, or changes nothing.
    pub fn program(
        &mut self,
        now_mono_ns: u64,
        port: u32,
        program: PortProgram,
    ) -> Result<PortView, SwitchError> {
        self.expire(now_mono_ns);
        let port = self.cabled_port(port)?;
        validate_program(&program)?;
        // Programming without a live lease is exactly what fencing forbids: the leader may
        // already have given these identities to another unit.
        match self.deadline_mono_ns {
            None => return Err(SwitchError::WatchdogNotArmed),
            Some(deadline_mono_ns) if now_mono_ns >= deadline_mono_ns => {
                return Err(SwitchError::LeaseExpired {
                    deadline_mono_ns,
                    now_mono_ns,
                })
            }
            Some(_) => {}
        }
        self.refuse_identities_held_elsewhere(port, &program)?;
        self.reserve_capacity(port, &program)?;

        if let Some(old) = self.ports.remove(&port) {
            self.release(&old);
            self.events.push(Event::Cleared {
                port,
                reason: ClearReason::Replaced,
            });
        }
        let slots = program
            .functions
            .iter()
            .map(|function| {
                let slot = match function {
                    Function::Nic { .. } => self.eth.allocate(),
                    Function::Hba { .. } => self.fc.allocate(),
                };
                slot.expect("capacity was checked, with this port's old slots counted as free")
            })
            .collect();
        self.events.push(Event::Programmed {
            port,
            profile: program.profile.clone(),
            revision: program.revision,
            functions: program.functions.clone(),
        });
        // Right after programming, announce each MAC and log each WWPN into its fabric, so
        // neither the LAN nor the SAN waits for a cache to age out after a failover.
        for function in &program.functions {
            self.events.push(match function {
                Function::Nic { mac, .. } => Event::MacAnnounced {
                    port,
                    mac: mac.to_string(),
                },
                Function::Hba { wwpn, wwnn, .. } => Event::FabricLogin {
                    port,
                    wwpn: wwpn.to_string(),
                    wwnn: wwnn.to_string(),
                },
            });
        }
        self.ports.insert(port, HeldProgram { program, slots });
        Ok(self.port_view(port))
    }

    /// Removes everything from host `port`. Returns whether it held anything. Needs no lease:
    /// clearing is always safe.
    pub fn clear(&mut self, now_mono_ns: u64, port: u32) -> Result<bool, SwitchError> {
        self.expire(now_mono_ns);
        let port = self.cabled_port(port)?;
        Ok(self.clear_port(port, ClearReason::Clear))
    }

    /// Removes everything from every host port. Returns the ports that held something.
    pub fn clear_all(&mut self, now_mono_ns: u64) -> Vec<u8> {
        self.expire(now_mono_ns);
        let held: Vec<u8> = self.ports.keys().copied().collect();
        for &port in &held {
            self.clear_port(port, ClearReason::ClearAll);
        }
        held
    }

    /// Takes a lease deadline (absolute, CLOCK_MONOTONIC ns). The switch keeps the latest it
    /// has seen: the agent only ever arms with the expiry of a lease it was granted, so the
    /// latest deadline is a lease still held, and an arm that arrives late or twice cannot
    /// shorten it; being absolute, it cannot lengthen one either. A deadline that has passed is
    /// applied first, so a lapse is always fenced, even if the renewal arrives a moment later.
    pub fn arm_watchdog(&mut self, now_mono_ns: u64, deadline_mono_ns: u64) -> ArmOutcome {
        self.expire(now_mono_ns);
        let in_force = self
            .deadline_mono_ns
            .map_or(deadline_mono_ns, |old| old.max(deadline_mono_ns));
        self.deadline_mono_ns = Some(in_force);
        if self.fenced && in_force > now_mono_ns {
            self.fenced = false;
        }
        // A first deadline that is already past fences at once.
        self.expire(now_mono_ns);
        ArmOutcome {
            deadline_mono_ns: in_force,
            fenced: self.fenced,
        }
    }

    /// Everything the switch holds, after applying the watchdog.
    pub fn state(&mut self, now_mono_ns: u64) -> StateView {
        self.expire(now_mono_ns);
        StateView {
            ports: self
                .spec
                .cabling
                .keys()
                .map(|&port| self.port_view(port))
                .collect(),
            watchdog_deadline_mono_ns: self.deadline_mono_ns,
            fenced: self.fenced,
            capacity: self.spec.capacity,
            vfs_used: u32::try_from(self.eth.in_use()).unwrap_or(u32::MAX),
            npiv_used: u32::try_from(self.fc.in_use()).unwrap_or(u32::MAX),
            watchdog: self.spec.watchdog,
        }
    }

    /// The ports that hold a program, in order (no watchdog applied).
    pub fn held_ports(&self) -> Vec<u8> {
        self.ports.keys().copied().collect()
    }

    /// Drops everything the switch presents without recording it, as a switch that loses power
    /// does. Used when the journal cannot be written: a switch that cannot record a change must
    /// not go on presenting, so the server halts the model and then the process.
    pub fn halt(&mut self) {
        let held = std::mem::take(&mut self.ports);
        for program in held.values() {
            self.release(program);
        }
        self.events.clear();
    }

    fn expire(&mut self, now_mono_ns: u64) {
        if self.spec.watchdog != WatchdogMode::Enforced || self.fenced {
            return;
        }
        let Some(deadline_mono_ns) = self.deadline_mono_ns else {
            return;
        };
        if now_mono_ns < deadline_mono_ns {
            return;
        }
        // The fence: the lease this switch presented under has ended, so the leader may soon
        // (after lease_ttl + drift_margin without a renewal) give its identities to a peer.
        // Clearing here, in the switch, does not depend on vnetd being alive or reachable.
        let held = std::mem::take(&mut self.ports);
        for program in held.values() {
            self.release(program);
        }
        self.fenced = true;
        self.events.push(Event::Fenced {
            ports: held.keys().copied().collect(),
            deadline_mono_ns,
        });
    }

    fn cabled_port(&self, port: u32) -> Result<u8, SwitchError> {
        let in_range = u8::try_from(port)
            .ok()
            .filter(|port| (1..=HOST_PORTS_MAX).contains(port));
        let Some(port) = in_range else {
            return Err(SwitchError::PortOutOfRange { port });
        };
        if !self.spec.cabling.contains_key(&port) {
            let cabled: Vec<String> = self.spec.cabling.keys().map(u8::to_string).collect();
            return Err(SwitchError::PortNotCabled {
                port,
                cabled: if cabled.is_empty() {
                    "none".to_owned()
                } else {
                    cabled.join(", ")
                },
            });
        }
        Ok(port)
    }

    fn refuse_identities_held_elsewhere(
        &self,
        port: u8,
        program: &PortProgram,
    ) -> Result<(), SwitchError> {
        let mut held_elsewhere: BTreeMap<Identity, (u8, &str)> = BTreeMap::new();
        for (&other_port, held) in self.ports.iter().filter(|(&p, _)| p != port) {
            for identity in held.program.identities() {
                held_elsewhere.insert(identity, (other_port, &held.program.profile));
            }
        }
        for (field, identity) in identity_fields(program) {
            if let Some(&(other_port, profile)) = held_elsewhere.get(&identity) {
                return Err(SwitchError::IdentityPresented {
                    field,
                    identity: identity.to_string(),
                    port: other_port,
                    profile: profile.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Checks there is room for `program` once `port`'s current functions are released.
    fn reserve_capacity(&self, port: u8, program: &PortProgram) -> Result<(), SwitchError> {
        let (mut nics_held, mut hbas_held) = (0, 0);
        if let Some(held) = self.ports.get(&port) {
            for function in &held.program.functions {
                match function {
                    Function::Nic { .. } => nics_held += 1,
                    Function::Hba { .. } => hbas_held += 1,
                }
            }
        }
        let (nics, hbas) = count_kinds(program);
        let free_vfs = self.eth.free() + nics_held;
        if nics > free_vfs {
            return Err(SwitchError::NoFreeVf {
                needed: nics,
                free: free_vfs,
                total: self.eth.total(),
            });
        }
        let free_npiv = self.fc.free() + hbas_held;
        if hbas > free_npiv {
            return Err(SwitchError::NoFreeNpiv {
                needed: hbas,
                free: free_npiv,
                total: self.fc.total(),
            });
        }
        Ok(())
    }

    fn clear_port(&mut self, port: u8, reason: ClearReason) -> bool {
        match self.ports.remove(&port) {
            Some(held) => {
                self.release(&held);
                self.events.push(Event::Cleared { port, reason });
                true
            }
            None => false,
        }
    }

    fn release(&mut self, held: &HeldProgram) {
        for (function, &slot) in held.program.functions.iter().zip(&held.slots) {
            match function {
                Function::Nic { .. } => self.eth.release(slot),
                Function::Hba { .. } => self.fc.release(slot),
            }
        }
    }

    fn port_view(&self, port: u8) -> PortView {
        PortView {
            port,
            server: self.spec.cabling.get(&port).cloned().unwrap_or_default(),
            held: self.ports.get(&port).cloned(),
        }
    }
}

fn count_kinds(program: &PortProgram) -> (usize, usize) {
    let nics = program
        .functions
        .iter()
        .filter(|function| matches!(function, Function::Nic { .. }))
        .count();
    (nics, program.functions.len() - nics)
}

fn function_field(index: usize, function: &Function) -> String {
    match function {
        Function::Nic { .. } => format!("functions[{index}].vnic"),
        Function::Hba { .. } => format!("functions[{index}].vhba"),
    }
}

/// Every identity of `program` with the request field it came from.
fn identity_fields(program: &PortProgram) -> Vec<(String, Identity)> {
    let mut out = Vec::new();
    for (index, function) in program.functions.iter().enumerate() {
        let field = function_field(index, function);
        match function {
            Function::Nic { mac, .. } => out.push((format!("{field}.mac"), Identity::Mac(*mac))),
            Function::Hba { wwpn, wwnn, .. } => {
                out.push((format!("{field}.wwpn"), Identity::Wwn(*wwpn)));
                out.push((format!("{field}.wwnn"), Identity::Wwn(*wwnn)));
            }
        }
    }
    out
}

/// The checks that need nothing but the program itself.
fn validate_program(program: &PortProgram) -> Result<(), SwitchError> {
    let (nics, hbas) = count_kinds(program);
    for (what, count, limit) in [
        ("vNICs", nics, VNICS_PER_PROFILE_MAX),
        ("vHBAs", hbas, VHBAS_PER_PROFILE_MAX),
    ] {
        if count > limit {
            return Err(SwitchError::TooManyFunctions { what, count, limit });
        }
    }
    validate_name("profile", &program.profile)?;
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    for (index, function) in program.functions.iter().enumerate() {
        let field = function_field(index, function);
        let name_field = format!("{field}.name");
        validate_name(&name_field, function.name())?;
        if let Some(first) = names.insert(function.name(), name_field.clone()) {
            return Err(SwitchError::InvalidArgument {
                field: name_field,
                value: function.name().to_owned(),
                reason: format!("is also the name of {first}"),
            });
        }
        match function {
            Function::Nic { network, vlan, .. } => {
                validate_name(&format!("{field}.network"), network)?;
                if let Some(vlan) = vlan.filter(|id| !(VLAN_ID_MIN..=VLAN_ID_MAX).contains(id)) {
                    return Err(SwitchError::InvalidArgument {
                        field: format!("{field}.vlan"),
                        value: vlan.to_string(),
                        reason: format!(
                            "must be 0 (untagged) or a VLAN id in {VLAN_ID_MIN}..={VLAN_ID_MAX}"
                        ),
                    });
                }
            }
            Function::Hba { fabric, .. } => validate_name(&format!("{field}.fabric"), fabric)?,
        }
    }
    let mut seen: BTreeMap<Identity, String> = BTreeMap::new();
    for (field, identity) in identity_fields(program) {
        if let Some(first) = seen.insert(identity, field.clone()) {
            return Err(SwitchError::InvalidArgument {
                field,
                value: canonical(&identity),
                reason: format!("is also {first} in this program; an identity is presented once"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    /// A deadline far enough ahead for tests that are not about expiry.
    const FAR: u64 = 1_000_000 * MS;

    fn spec(capacity: Capacity) -> SwitchSpec {
        SwitchSpec {
            cabling: (1..=4)
                .map(|port| (port, format!("srv{port:02}")))
                .collect(),
            capacity,
            watchdog: WatchdogMode::Enforced,
        }
    }

    fn roomy() -> Capacity {
        Capacity {
            eth_ports: 2,
            vfs_per_eth_port: 4,
            fc_ports: 2,
            npiv_per_fc_port: 2,
        }
    }

    fn nic(name: &str, mac: &str) -> Function {
        Function::Nic {
            name: name.into(),
            mac: mac.parse().unwrap(),
            network: "prod".into(),
            vlan: Some(100),
        }
    }

    fn hba(name: &str, wwpn: &str, wwnn: &str) -> Function {
        Function::Hba {
            name: name.into(),
            wwpn: wwpn.parse().unwrap(),
            wwnn: wwnn.parse().unwrap(),
            fabric: "fabric-a".into(),
        }
    }

    fn program(profile: &str, functions: Vec<Function>) -> PortProgram {
        PortProgram {
            profile: profile.into(),
            revision: 1,
            functions,
        }
    }

    fn web() -> PortProgram {
        program(
            "web",
            vec![
                nic("eth0", "02:00:00:00:00:01"),
                hba("fc0", "20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:01:01"),
            ],
        )
    }

    fn armed(capacity: Capacity) -> Switch {
        let mut switch = Switch::new(spec(capacity));
        switch.arm_watchdog(0, FAR);
        switch
    }

    #[test]
    fn programs_and_journals_announcements_in_order() {
        let mut switch = armed(roomy());
        let view = switch.program(10, 2, web()).unwrap();
        assert_eq!(view.server, "srv02");
        let held = view.held.unwrap();
        assert_eq!(held.program, web());
        assert_eq!(
            held.slots,
            [
                Slot {
                    adapter_port: 1,
                    index: 0
                },
                Slot {
                    adapter_port: 1,
                    index: 0
                }
            ]
        );
        assert_eq!(
            switch.take_events(),
            [
                Event::Programmed {
                    port: 2,
                    profile: "web".into(),
                    revision: 1,
                    functions: web().functions
                },
                Event::MacAnnounced {
                    port: 2,
                    mac: "02:00:00:00:00:01".into()
                },
                Event::FabricLogin {
                    port: 2,
                    wwpn: "20:00:00:25:b5:00:00:01".into(),
                    wwnn: "20:00:00:25:b5:00:01:01".into()
                },
            ]
        );
        assert!(switch.take_events().is_empty());
    }

    #[test]
    fn refuses_an_identity_another_port_presents() {
        let mut switch = armed(roomy());
        switch.program(10, 1, web()).unwrap();
        switch.take_events();
        let cases = [
            (
                program("db", vec![nic("eth0", "02:00:00:00:00:01")]),
                "functions[0].vnic.mac: MAC 02:00:00:00:00:01 is already presented on host port 1 \
                 (profile \"web\")",
            ),
            (
                // A WWPN elsewhere collides with a WWNN here: both are WWNs.
                program(
                    "db",
                    vec![
                        nic("eth0", "02:00:00:00:00:02"),
                        hba("fc0", "20:00:00:25:b5:00:00:09", "20:00:00:25:b5:00:00:01"),
                    ],
                ),
                "functions[1].vhba.wwnn: WWN 20:00:00:25:b5:00:00:01 is already presented on host \
                 port 1 (profile \"web\")",
            ),
        ];
        for (attempt, message) in cases {
            let error = switch.program(20, 3, attempt).unwrap_err();
            assert!(matches!(
                error,
                SwitchError::IdentityPresented { port: 1, .. }
            ));
            assert_eq!(error.to_string(), message);
        }
        // Nothing changed: port 3 is empty, nothing journaled, and the same program is still
        // welcome on port 1 itself (a replacement).
        assert!(switch.state(30).ports[2].held.is_none());
        assert!(switch.take_events().is_empty());
        switch.program(40, 1, web()).unwrap();
    }

    #[test]
    fn refuses_bad_programs_naming_the_field() {
        let mut switch = armed(roomy());
        let too_many: Vec<Function> = (0..=VNICS_PER_PROFILE_MAX)
            .map(|i| nic(&format!("eth{i}"), &format!("02:00:00:00:01:{i:02x}")))
            .collect();
        let cases: Vec<(u32, PortProgram, &str)> = vec![
            (0, web(), "host_port 0 is outside 1..=30"),
            (31, web(), "host_port 31 is outside 1..=30"),
            (300, web(), "host_port 300 is outside 1..=30"),
            (
                5,
                web(),
                "host_port 5 is not cabled to any server on this switch (cabled ports: 1, 2, 3, 4)",
            ),
            (1, program("Web", vec![]), "invalid profile \"Web\""),
            (
                1,
                program(
                    "web",
                    vec![
                        nic("eth0", "02:00:00:00:00:01"),
                        nic("eth0", "02:00:00:00:00:02"),
                    ],
                ),
                "invalid functions[1].vnic.name \"eth0\": is also the name of functions[0].vnic.name",
            ),
            (
                1,
                program(
                    "web",
                    vec![
                        nic("eth0", "02:00:00:00:00:01"),
                        nic("eth1", "02:00:00:00:00:01"),
                    ],
                ),
                "invalid functions[1].vnic.mac \"02:00:00:00:00:01\": is also functions[0].vnic.mac",
            ),
            (
                1,
                program(
                    "web",
                    vec![hba("fc0", "20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:00:01")],
                ),
                "invalid functions[0].vhba.wwnn \"20:00:00:25:b5:00:00:01\": is also \
                 functions[0].vhba.wwpn",
            ),
            (
                1,
                program(
                    "web",
                    vec![Function::Nic {
                        name: "eth0".into(),
                        mac: "02:00:00:00:00:01".parse().unwrap(),
                        network: "prod".into(),
                        vlan: Some(4095),
                    }],
                ),
                "invalid functions[0].vnic.vlan \"4095\"",
            ),
            (
                1,
                program(
                    "web",
                    vec![Function::Hba {
                        name: "fc0".into(),
                        wwpn: "20:00:00:25:b5:00:00:01".parse().unwrap(),
                        wwnn: "20:00:00:25:b5:00:01:01".parse().unwrap(),
                        fabric: "Fabric A".into(),
                    }],
                ),
                "invalid functions[0].vhba.fabric \"Fabric A\"",
            ),
            (1, program("web", too_many), "too many vNICs in one program: 9, the limit is 8"),
        ];
        for (port, attempt, message) in cases {
            let error = switch.program(10, port, attempt).unwrap_err();
            assert!(
                error.to_string().starts_with(message),
                "expected {message:?}, got {error}"
            );
        }
        assert!(switch.take_events().is_empty());
        assert_eq!(switch.state(20).vfs_used, 0);
    }

    #[test]
    fn refuses_beyond_capacity_and_replacing_frees_slots() {
        let tight = Capacity {
            eth_ports: 2,
            vfs_per_eth_port: 1,
            fc_ports: 1,
            npiv_per_fc_port: 1,
        };
        let mut switch = armed(tight);
        let two_nics = program(
            "a",
            vec![
                nic("eth0", "02:00:00:00:00:01"),
                nic("eth1", "02:00:00:00:00:02"),
            ],
        );
        let view = switch.program(10, 1, two_nics).unwrap();
        // Spread over both Ethernet ports.
        let ports: Vec<u8> = view
            .held
            .unwrap()
            .slots
            .iter()
            .map(|s| s.adapter_port)
            .collect();
        assert_eq!(ports, [1, 2]);
        switch.take_events();

        let error = switch
            .program(20, 2, program("b", vec![nic("eth0", "02:00:00:00:00:03")]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "no free virtual function on any Ethernet port: the program needs 1, 0 of 2 are free"
        );
        let hbas = program(
            "b",
            vec![
                hba("fc0", "20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:01:01"),
                hba("fc1", "20:00:00:25:b5:00:00:02", "20:00:00:25:b5:00:01:02"),
            ],
        );
        let error = switch.program(20, 2, hbas).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no free NPIV login on any FC port: the program needs 2, 1 of 1 are free"
        );
        assert!(switch.take_events().is_empty());

        // Replacing port 1 with a program of the same size fits: its old VFs count as free.
        let replacement = program(
            "a",
            vec![
                nic("eth0", "02:00:00:00:00:05"),
                nic("eth1", "02:00:00:00:00:06"),
            ],
        );
        switch.program(30, 1, replacement.clone()).unwrap();
        let events = switch.take_events();
        assert_eq!(
            events[0],
            Event::Cleared {
                port: 1,
                reason: ClearReason::Replaced
            }
        );
        assert!(matches!(events[1], Event::Programmed { port: 1, .. }));
        let state = switch.state(31);
        assert_eq!(state.vfs_used, 2);
        assert_eq!(state.ports[0].held.as_ref().unwrap().program, replacement);

        // Shrinking port 1 frees a VF for port 2.
        switch
            .program(40, 1, program("a", vec![nic("eth0", "02:00:00:00:00:05")]))
            .unwrap();
        switch
            .program(50, 2, program("b", vec![nic("eth0", "02:00:00:00:00:06")]))
            .unwrap();
        assert_eq!(switch.state(51).vfs_used, 2);
    }

    #[test]
    fn refuses_to_program_without_a_live_lease() {
        let mut switch = Switch::new(spec(roomy()));
        let error = switch.program(10, 1, web()).unwrap_err();
        assert_eq!(error, SwitchError::WatchdogNotArmed);
        assert!(error.to_string().starts_with("watchdog not armed"));

        switch.arm_watchdog(10, 100 * MS);
        let error = switch.program(100 * MS, 1, web()).unwrap_err();
        assert_eq!(
            error,
            SwitchError::LeaseExpired {
                deadline_mono_ns: 100 * MS,
                now_mono_ns: 100 * MS
            }
        );
        let error = switch.program(350 * MS, 1, web()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("lease expired at 100000000 ns CLOCK_MONOTONIC (250 ms ago)"),
            "{error}"
        );
        // The lapse was fenced on the way in, even with nothing to clear.
        assert_eq!(
            switch.take_events(),
            [Event::Fenced {
                ports: vec![],
                deadline_mono_ns: 100 * MS
            }]
        );
        assert!(switch
            .state(350 * MS)
            .ports
            .iter()
            .all(|p| p.held.is_none()));
        // One nanosecond before the deadline the lease is live.
        switch.arm_watchdog(400 * MS, 500 * MS);
        switch.program(500 * MS - 1, 1, web()).unwrap();
    }

    #[test]
    fn watchdog_expiry_clears_everything_and_journals_fenced() {
        let mut switch = Switch::new(spec(roomy()));
        switch.arm_watchdog(0, 100 * MS);
        switch.program(1, 1, web()).unwrap();
        switch
            .program(2, 3, program("db", vec![nic("eth0", "02:00:00:00:00:02")]))
            .unwrap();
        switch.take_events();

        switch.tick(100 * MS - 1);
        assert!(switch.take_events().is_empty());
        assert!(!switch.state(100 * MS - 1).fenced);

        switch.tick(100 * MS);
        assert_eq!(
            switch.take_events(),
            [Event::Fenced {
                ports: vec![1, 3],
                deadline_mono_ns: 100 * MS
            }]
        );
        let state = switch.state(101 * MS);
        assert!(state.fenced);
        assert!(state.ports.iter().all(|port| port.held.is_none()));
        assert_eq!((state.vfs_used, state.npiv_used), (0, 0));
        // Fenced once, not on every tick.
        switch.tick(200 * MS);
        assert!(switch.take_events().is_empty());

        // A deadline at or before now keeps the fence; a future one lifts it.
        let outcome = switch.arm_watchdog(300 * MS, 300 * MS);
        assert_eq!(
            outcome,
            ArmOutcome {
                deadline_mono_ns: 300 * MS,
                fenced: true
            }
        );
        assert!(matches!(
            switch.program(300 * MS, 1, web()),
            Err(SwitchError::LeaseExpired { .. })
        ));
        let outcome = switch.arm_watchdog(301 * MS, 400 * MS);
        assert!(!outcome.fenced);
        switch.program(302 * MS, 1, web()).unwrap();
    }

    #[test]
    fn arming_keeps_the_latest_deadline_and_fences_a_lapse_first() {
        let mut switch = Switch::new(spec(roomy()));
        assert_eq!(switch.arm_watchdog(0, 100 * MS).deadline_mono_ns, 100 * MS);
        // A delayed, older arm does not shorten the lease.
        assert_eq!(
            switch.arm_watchdog(10 * MS, 50 * MS).deadline_mono_ns,
            100 * MS
        );
        switch.program(60 * MS, 1, web()).unwrap();
        switch.take_events();

        // The renewal arrives after the deadline: the switch fences the lapse first, then takes
        // the new deadline, so the port is empty even though the lease is live again.
        let outcome = switch.arm_watchdog(120 * MS, 300 * MS);
        assert_eq!(
            outcome,
            ArmOutcome {
                deadline_mono_ns: 300 * MS,
                fenced: false
            }
        );
        assert_eq!(
            switch.take_events(),
            [Event::Fenced {
                ports: vec![1],
                deadline_mono_ns: 100 * MS
            }]
        );
        let state = switch.state(121 * MS);
        assert!(state.ports.iter().all(|port| port.held.is_none()));
        assert_eq!(state.watchdog_deadline_mono_ns, Some(300 * MS));
    }

    #[test]
    fn clear_and_clear_all_need_no_lease_and_journal_only_real_changes() {
        let mut switch = armed(roomy());
        switch.program(1, 1, web()).unwrap();
        switch
            .program(2, 2, program("db", vec![nic("eth0", "02:00:00:00:00:02")]))
            .unwrap();
        switch
            .program(3, 4, program("app", vec![nic("eth0", "02:00:00:00:00:03")]))
            .unwrap();
        switch.take_events();

        assert_eq!(switch.clear(4, 2), Ok(true));
        assert_eq!(switch.clear(5, 2), Ok(false));
        assert_eq!(
            switch.clear(5, 9).unwrap_err(),
            SwitchError::PortNotCabled {
                port: 9,
                cabled: "1, 2, 3, 4".into()
            }
        );
        assert_eq!(switch.clear_all(6), vec![1, 4]);
        assert_eq!(switch.clear_all(7), Vec::<u8>::new());
        assert_eq!(
            switch.take_events(),
            [
                Event::Cleared {
                    port: 2,
                    reason: ClearReason::Clear
                },
                Event::Cleared {
                    port: 1,
                    reason: ClearReason::ClearAll
                },
                Event::Cleared {
                    port: 4,
                    reason: ClearReason::ClearAll
                },
            ]
        );
        let state = switch.state(8);
        assert_eq!((state.vfs_used, state.npiv_used), (0, 0));
        // An identity freed by a clear may be presented on another port at once.
        switch.program(9, 3, web()).unwrap();
    }

    #[test]
    fn unsafe_disabled_watchdog_never_fences_but_still_needs_a_lease_to_program() {
        let mut spec = spec(roomy());
        spec.watchdog = WatchdogMode::UnsafeDisabled;
        let mut switch = Switch::new(spec);
        switch.arm_watchdog(0, 100 * MS);
        switch.program(1, 1, web()).unwrap();
        switch.take_events();
        switch.tick(500 * MS);
        let state = switch.state(500 * MS);
        assert!(!state.fenced);
        assert!(state.ports[0].held.is_some());
        assert!(switch.take_events().is_empty());
        assert!(matches!(
            switch.program(500 * MS, 2, program("db", vec![])),
            Err(SwitchError::LeaseExpired { .. })
        ));
    }
}
