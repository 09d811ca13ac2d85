//! `apply_entry`: a batched entry applies each of its requests as if it were its own entry, and
//! the revisions it hands out stay unique and increasing across entries.

use vnet_model::{apply_entry, next_revision, Accepted};

use super::support::*;

fn request(command: Command) -> Request {
    Request {
        actor: "alice".to_string(),
        command,
        trace: None,
        on_behalf_of: None,
    }
}

fn batch(commands: Vec<Command>) -> Request {
    Request {
        actor: "vnetd/batch".to_string(),
        command: Command::Batch(commands.into_iter().map(request).collect()),
        trace: None,
        on_behalf_of: None,
    }
}

fn revisions(results: &[Result<Accepted, Rejection>]) -> Vec<Option<Revision>> {
    results
        .iter()
        .map(|r| r.as_ref().ok().map(|a| a.revision))
        .collect()
}

#[test]
fn a_plain_entry_takes_its_index_as_revision_as_before_batches() {
    let mut cluster = with_pools();
    let index = cluster.state.revision() + 7;
    let mut by_apply = cluster.state.clone();
    let command = create(spec("web-1", vec![vnic("eth0")], vec![]));
    let results = apply_entry(&mut cluster.state, index, &request(command.clone()));
    assert_eq!(revisions(&results), vec![Some(index)]);
    // Exactly what a node without batches computes for the same entry.
    apply(&mut by_apply, index, &request(command)).expect("applies");
    assert_eq!(cluster.state, by_apply);
}

#[test]
fn a_batch_gives_each_request_its_own_revision_and_the_next_entry_continues_after_them() {
    let mut cluster = with_pools();
    let index = cluster.state.revision() + 1;
    let entry = batch(vec![
        create(spec("web-1", vec![vnic("eth0")], vec![])),
        create(spec("web-2", vec![vnic("eth0")], vec![])),
        create(spec("web-3", vec![vnic("eth0")], vec![])),
    ]);
    let results = apply_entry(&mut cluster.state, index, &entry);
    assert_eq!(
        revisions(&results),
        vec![Some(index), Some(index + 1), Some(index + 2)]
    );
    for (name, revision) in [("web-1", index), ("web-2", index + 1), ("web-3", index + 2)] {
        assert_eq!(cluster.state.profile(name).expect(name).revision, revision);
    }
    // The next entry's index is below the revisions the batch used: it continues after them.
    assert_eq!(next_revision(&cluster.state, index + 1), index + 3);
    let results = apply_entry(
        &mut cluster.state,
        index + 1,
        &request(delete("web-1", Some(index))),
    );
    assert_eq!(revisions(&results), vec![Some(index + 3)]);
    // Every change is in the history once, in revision order.
    let history: Vec<Revision> = cluster
        .state
        .events_since(index)
        .expect("retained")
        .map(|e| e.revision)
        .collect();
    assert_eq!(history, vec![index, index + 1, index + 2, index + 3]);
}

#[test]
fn a_refused_request_in_a_batch_changes_nothing_and_takes_no_revision() {
    let mut cluster = with_pools();
    cluster.ok(create(spec("web-1", vec![vnic("eth0")], vec![])));
    let index = cluster.state.revision() + 1;
    let entry = batch(vec![
        // Refused: the name is taken.
        create(spec("web-1", vec![vnic("eth0")], vec![])),
        create(spec("web-2", vec![vnic("eth0")], vec![])),
        // Refused: a stale expected revision.
        delete("web-2", Some(1)),
    ]);
    let results = apply_entry(&mut cluster.state, index, &entry);
    assert!(matches!(results[0], Err(Rejection::AlreadyExists { .. })));
    assert_eq!(results[1].as_ref().map(|a| a.revision), Ok(index));
    assert!(matches!(
        results[2],
        Err(Rejection::RevisionMismatch { .. })
    ));
    assert_eq!(cluster.state.revision(), index);
}

#[test]
fn a_batch_is_refused_inside_a_batch_and_by_apply() {
    let mut cluster = with_pools();
    let index = cluster.state.revision() + 1;
    let inner = batch(vec![create(spec("web-1", vec![vnic("eth0")], vec![]))]);
    let before = cluster.state.clone();
    let nested = Request {
        actor: "vnetd/batch".to_string(),
        command: Command::Batch(vec![inner.clone()]),
        trace: None,
        on_behalf_of: None,
    };
    let results = apply_entry(&mut cluster.state, index, &nested);
    assert!(
        matches!(&results[..], [Err(Rejection::InvalidArgument { field, .. })] if field == "command"),
        "{results:?}"
    );
    assert_eq!(cluster.state, before);
    assert!(matches!(
        apply(&mut cluster.state, index, &inner),
        Err(Rejection::FailedPrecondition { .. })
    ));
    assert_eq!(cluster.state, before);
}

#[test]
fn replicas_applying_the_same_entries_agree_on_every_revision() {
    let entries = [
        (
            10,
            batch(vec![
                create(spec("a", vec![vnic("eth0")], vec![])),
                create(spec("b", vec![vnic("eth0")], vec![])),
            ]),
        ),
        (11, request(create(spec("c", vec![vnic("eth0")], vec![])))),
        (
            12,
            batch(vec![
                delete("a", None),
                delete("zz", None),
                delete("b", None),
            ]),
        ),
        (20, request(delete("c", None))),
    ];
    let mut one = with_pools().state;
    let mut two = one.clone();
    let mut got = Vec::new();
    for (index, entry) in &entries {
        let results = apply_entry(&mut one, *index, entry);
        assert_eq!(apply_entry(&mut two, *index, entry), results);
        got.extend(revisions(&results));
    }
    assert_eq!(one, two);
    assert_eq!(
        got,
        vec![
            Some(10),
            Some(11),
            Some(12),
            Some(13),
            None,
            Some(14),
            Some(20)
        ]
    );
}
