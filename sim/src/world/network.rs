//! The simulated network: per-message delay, loss and cuts, and what a node does on delivery.

use super::*;

impl World {
    // ---- network ----

    pub(super) fn send(&mut self, from: usize, to: usize, wire: Wire) {
        if self.cut[from][to] {
            return;
        }
        let loss = self.loss_per_mille[from].max(self.loss_per_mille[to]);
        if loss > 0 && self.rng.chance(loss) {
            return;
        }
        let wire_ns = self.rng.range(50_000, MS);
        let delay = wire_ns + self.work_ns(&wire) + self.delay_ns[from] + self.delay_ns[to];
        self.at(
            self.now + delay,
            Ev::Deliver {
                from,
                to,
                wire: Box::new(wire),
            },
        );
    }

    /// Time before a message arrives beyond the wire: scheduling on a busy machine (mostly
    /// short, now and then tens of milliseconds), a TCP retransmission now and then, and the
    /// log's fsync before a follower acknowledges entries. These stretch the gaps between a
    /// leader's decisions and let a request arrive long after it was sent.
    pub(super) fn work_ns(&mut self, wire: &Wire) -> u64 {
        // How busy the machines are is drawn per run: an idle rack, or two cores shared by
        // every process of the cluster and its clients.
        let (slow_per_mille, very_slow_per_mille) = match self.load {
            Load::Light => (30, 0),
            Load::Busy => (100, 10),
            Load::Overloaded => (200, 40),
        };
        let roll = self.rng.range(0, 1_000);
        let scheduling = if roll < very_slow_per_mille {
            self.rng.range(60 * MS, 300 * MS)
        } else if roll < slow_per_mille {
            self.rng.range(MS, 60 * MS)
        } else {
            self.rng.range(10_000, MS)
        };
        // Now and then a segment is lost and TCP resends it after its retransmission timeout.
        let retransmit = if self.load != Load::Light && self.rng.chance(5) {
            self.rng.range(200 * MS, 800 * MS)
        } else {
            0
        };
        let fsync = match wire {
            Wire::Raft(Msg::AppendReply { wrote: true, .. }) => self.rng.range(MS / 2, 5 * MS),
            _ => 0,
        };
        scheduling + retransmit + fsync
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, wire: Wire) {
        match wire {
            Wire::Raft(msg) => {
                let now = self.local(to);
                self.nodes[to].raft.handle(from as NodeId + 1, msg, now);
                self.after_raft(to);
            }
            Wire::Call {
                call_id,
                caller,
                hops,
                call,
            } => {
                let _ = from;
                self.leader_call(
                    to,
                    Waiter::Caller {
                        node: caller,
                        call_id,
                    },
                    hops,
                    call,
                )
            }
            Wire::Reply { call_id, reply } => self.complete(to, call_id, reply),
            Wire::GrantAsk { unit, ask_id } => {
                let grant = self.grant_here(to, &unit);
                self.send(to, from, Wire::GrantAnswer { ask_id, grant });
            }
            Wire::GrantAnswer { ask_id, grant } => self.granted(to, ask_id, grant),
            Wire::ReportAsk { round } => {
                let report = self.report_here(to);
                self.send(to, from, Wire::ReportAnswer { round, report });
            }
            Wire::ReportAnswer { round, report } => self.report_in(to, round, report),
        }
    }
}
