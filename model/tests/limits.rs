//! The bounds in `limits` that are derived from others: the largest command a client or the
//! system can build within the model's limits fits one log entry (`ENTRY_BYTES_MAX`), measured
//! in the log's own encoding (JSON).

use std::collections::BTreeMap;

use vnet_model::limits::{
    ACTOR_LEN_MAX, APPEND_BATCH_BYTES_MAX, ENTRY_BYTES_MAX, NAME_LEN_MAX,
    PLACEMENT_CHANGES_PER_COMMAND_MAX, PROFILES_MAX, VHBAS_PER_PROFILE_MAX, VNICS_PER_PROFILE_MAX,
};
use vnet_model::placement::REASON_LEN_MAX;
use vnet_model::{
    Command, Failback, Move, PlacementChange, ProfileSpec, Request, VHbaSpec, VNicSpec,
};

/// A name of `NAME_LEN_MAX` characters, distinct per `n`.
fn name(n: usize) -> String {
    let tail = format!("-{n}");
    format!("{}{tail}", "n".repeat(NAME_LEN_MAX - tail.len()))
}

fn request(command: Command) -> Request {
    Request {
        actor: "a".repeat(ACTOR_LEN_MAX),
        command,
        // A W3C traceparent, the only form a node records.
        trace: Some(format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16))),
        on_behalf_of: None,
    }
}

fn encoded_len(request: &Request) -> usize {
    serde_json::to_vec(request).expect("encode").len()
}

#[test]
fn the_largest_client_command_fits_an_entry() {
    let spec = ProfileSpec {
        name: name(0),
        server: name(1),
        vnics: (0..VNICS_PER_PROFILE_MAX)
            .map(|i| VNicSpec {
                name: name(10 + i),
                mac: Some(format!("02:00:00:00:00:{i:02x}").parse().expect("mac")),
                network: name(20 + i),
                vlan: Some(4094),
                pool: Some(name(30 + i)),
            })
            .collect(),
        vhbas: (0..VHBAS_PER_PROFILE_MAX)
            .map(|i| VHbaSpec {
                name: name(40 + i),
                wwpn: Some(
                    format!("20:00:00:00:00:00:01:{i:02x}")
                        .parse()
                        .expect("wwn"),
                ),
                wwnn: Some(
                    format!("20:00:00:00:00:00:02:{i:02x}")
                        .parse()
                        .expect("wwn"),
                ),
                fabric: name(50 + i),
                pool: Some(name(60 + i)),
            })
            .collect(),
        preferred_unit: Some(name(2)),
        failback: Failback::Manual,
    };
    if let Err(refused) = spec.validate() {
        panic!("the spec is valid: {refused}");
    }
    let size = encoded_len(&request(Command::UpdateProfile {
        spec,
        expected_revision: Some(u64::MAX),
    }));
    println!("largest client command: {size} bytes (limit {ENTRY_BYTES_MAX})");
    assert!(size <= ENTRY_BYTES_MAX);
}

#[test]
fn the_largest_system_command_fits_an_entry() {
    let reason = "r".repeat(REASON_LEN_MAX);
    let changes: Vec<PlacementChange> = (0..PLACEMENT_CHANGES_PER_COMMAND_MAX)
        .map(|i| PlacementChange {
            profile: name(i),
            unit: None,
            moving: Some(Move {
                from: name(100_000 + i),
                to: name(200_000 + i),
            }),
            reason: reason.clone(),
            failed_over_from: Some(name(300_000 + i)),
        })
        .collect();
    for change in &changes[..2] {
        change.validate().expect("a valid change");
    }
    let place = encoded_len(&request(Command::Place {
        changes: changes.clone(),
    }));
    let failover = encoded_len(&request(Command::FailOver {
        unit: name(0),
        epoch: u64::MAX,
        changes,
    }));
    let report = encoded_len(&request(Command::ReportPresented {
        unit: name(0),
        profiles: (0..PROFILES_MAX)
            .map(|i| (name(i), u64::MAX))
            .collect::<BTreeMap<_, _>>(),
        as_of: u64::MAX,
    }));
    println!(
        "largest system commands: place {place}, failover {failover} bytes (one part of \
         {PLACEMENT_CHANGES_PER_COMMAND_MAX} changes; limit {APPEND_BATCH_BYTES_MAX}), report \
         {report} bytes (limit {ENTRY_BYTES_MAX})"
    );
    // A part of a placement or failover fits one AppendEntries batch, so it replicates as
    // promptly as any batch; a report of every profile fits an entry.
    assert!(place.max(failover) <= APPEND_BATCH_BYTES_MAX);
    assert!(report <= ENTRY_BYTES_MAX);
}
