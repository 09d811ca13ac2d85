//! The committed log seen whole, and the checks made on each committed entry.

use super::*;

impl World {
    /// The committed log as a whole: every replica must commit the same entry at each index.
    pub(super) fn commit_to_oracle(&mut self, index: u64, entry: &Entry) {
        let known = self.oracle_log.len() as u64;
        if index <= known {
            if self.oracle_log[index as usize - 1] != *entry {
                self.fail(format!(
                    "Raft model: two different entries committed at {index}"
                ));
            }
            return;
        }
        assert_eq!(index, known + 1, "entries are applied in order");
        self.oracle_log.push(entry.clone());
        if let Some(request) = &entry.request {
            let before: BTreeMap<String, Option<String>> = self
                .oracle
                .placements()
                .map(|(p, pl)| (p.clone(), pl.unit.clone()))
                .collect();
            if apply_entry(&mut self.oracle, index, request)
                .iter()
                .any(Result::is_ok)
            {
                self.check_committed_placements(index, &before);
            }
        }
    }

    /// Invariant 5, at commit: no change gives a profile to a draining unit.
    pub(super) fn check_committed_placements(
        &mut self,
        index: u64,
        before: &BTreeMap<String, Option<String>>,
    ) {
        let mut given = Vec::new();
        for (profile, placement) in self.oracle.placements() {
            if placement.revision != index {
                continue;
            }
            if let Some(unit) = &placement.unit {
                if before.get(profile).cloned().flatten().as_deref() != Some(unit.as_str())
                    && self.oracle.is_draining(unit)
                {
                    given.push(format!("{profile} given to draining {unit} at {index}"));
                }
            }
        }
        if let Some(what) = given.into_iter().next() {
            self.fail(what);
        }
        if let Err(what) = drain_means_empty(&self.oracle, &self.presented) {
            self.fail(what);
        }
        if let Some(request) = &self.oracle_log.last().and_then(|e| e.request.clone()) {
            if let Command::Place { changes } = &request.command {
                self.note(|| {
                    let list: Vec<String> = changes
                        .iter()
                        .map(|c| {
                            format!(
                                "{}->{}{}",
                                c.profile,
                                c.unit.as_deref().unwrap_or("-"),
                                c.moving
                                    .as_ref()
                                    .map(|m| format!(" (moving {}->{})", m.from, m.to))
                                    .unwrap_or_default()
                            )
                        })
                        .collect();
                    format!(
                        "committed {index} Place by {}: {}",
                        request.actor,
                        list.join(", ")
                    )
                });
            }
        }
    }
}
