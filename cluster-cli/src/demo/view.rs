//! What the demo prints once it is ready: where each process runs, and the commands to try.

use serde::Serialize;

use super::plan::NodePlan;
use crate::output::Render;

/// The unit whose death the printed instructions show.
pub(super) const FAILOVER_UNIT: &str = "unit-a";

/// What the demo prints once it is ready.
#[derive(Debug, Serialize)]
pub(super) struct DemoView {
    pub(super) endpoints: String,
    pub(super) data_dir: String,
    pub(super) profiles_presented: usize,
    pub(super) nodes: Vec<DemoNodeView>,
    /// What to run first in another terminal: the certificates to use (with TLS), the
    /// endpoints when the ports are not vnetctl's defaults.
    pub(super) setup: Vec<String>,
    pub(super) try_commands: Vec<String>,
    pub(super) planned_moves: Vec<String>,
    pub(super) failover: FailoverDemoView,
    /// `--dataplane linux`: where the vNICs are and how to ping across a failover.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) data_plane: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct DemoNodeView {
    #[serde(flatten)]
    pub(super) plan: NodePlan,
    pub(super) data_dir: String,
    pub(super) log: String,
    pub(super) pid: u32,
    pub(super) switch: Option<DemoSwitchView>,
}

#[derive(Debug, Serialize)]
pub(super) struct DemoSwitchView {
    pub(super) log: String,
    pub(super) journal: String,
    pub(super) pid: u32,
}

/// How to watch a real failover: kill a unit's vnetd and switch, then look.
#[derive(Debug, Serialize)]
pub(super) struct FailoverDemoView {
    pub(super) unit: &'static str,
    pub(super) kill_command: String,
    pub(super) then: Vec<String>,
}

impl Render for DemoView {
    fn text(&self) -> String {
        let mut out = format!(
            "vnet-ha demo cluster is up; {} profiles are presented.\n\n",
            self.profiles_presented
        );
        for node in &self.nodes {
            out.push_str(&format!(
                "  {} (id {}, {}): api {}  peer {}",
                node.plan.name,
                node.plan.id,
                node.plan.role,
                node.plan.api_addr,
                node.plan.peer_addr,
            ));
            if let Some(switch) = &node.plan.switch_addr {
                out.push_str(&format!("  switch {switch}"));
            }
            out.push_str(&format!(
                "\n    vnetd  (pid {}) log: {}\n           metrics: http://{}/metrics\n",
                node.pid, node.log, node.plan.metrics_addr
            ));
            if let Some(switch) = &node.switch {
                out.push_str(&format!(
                    "    switch (pid {}) log: {}\n",
                    switch.pid, switch.log
                ));
                if let Some(metrics) = &node.plan.switch_metrics_addr {
                    out.push_str(&format!("           metrics: http://{metrics}/metrics\n"));
                }
            }
        }
        out.push_str(&format!("\nendpoints: {}\n", self.endpoints));
        if !self.setup.is_empty() {
            out.push_str("\nIn another terminal, first:\n");
            for line in &self.setup {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out.push_str("\nTry:\n");
        for command in &self.try_commands {
            out.push_str(&format!("  {command}\n"));
        }
        out.push_str("\nPlanned moves (break before make; run them in order):\n");
        for command in &self.planned_moves {
            out.push_str(&format!("  {command}\n"));
        }
        out.push_str(&format!(
            "\nTo watch a failover, kill {}'s vnetd and its switch (it stays down until the \
             demo restarts):\n  {}\n",
            self.failover.unit, self.failover.kill_command
        ));
        for command in &self.failover.then {
            out.push_str(&format!("  {command}\n"));
        }
        if !self.data_plane.is_empty() {
            out.push_str("\nData plane (Linux):\n");
            for line in &self.data_plane {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out.push_str("\nCtrl-C stops the cluster and removes its data.\n");
        out
    }
}

/// Commands with their comments aligned in one column, as printed.
pub(super) fn aligned(commands: &[(&str, &str)]) -> Vec<String> {
    let width = commands
        .iter()
        .map(|(command, _)| command.len())
        .max()
        .unwrap_or(0);
    commands
        .iter()
        .map(|(command, comment)| match comment {
            &"" => command.to_string(),
            comment => format!("{command:width$}  # {comment}"),
        })
        .collect()
}

pub(super) fn try_commands() -> Vec<String> {
    aligned(&[
        (
            "vnetctl status",
            "members, units, and where each profile is",
        ),
        ("vnetctl profile get web-01", ""),
        ("vnetctl pool usage", ""),
        ("vnetctl watch", "in another terminal, then:"),
        ("vnetctl leader transfer --to 2", ""),
        (
            "vnetctl role list",
            "admin (bootstrap), operator and viewer",
        ),
        (
            "vnetctl audit --since 10m",
            "every write and refusal, per node",
        ),
    ])
}

pub(super) fn planned_moves() -> Vec<String> {
    aligned(&[
        (
            "vnetctl drain unit-a --wait",
            "web-01, db-01, app-01 move to unit-b",
        ),
        (
            "vnetctl undrain unit-a",
            "web-01, app-01 (failback auto) return after the hold-down",
        ),
        (
            "vnetctl failover db-01 --to unit-a",
            "db-01 (failback manual) by hand",
        ),
        (
            "vnetctl failover --from unit-b",
            "all off unit-b; web-02 (failback auto) comes back",
        ),
    ])
}

pub(super) fn failover_commands() -> Vec<String> {
    aligned(&[
        (
            "vnetctl status",
            "within ~2 s unit-a's profiles show failed_over on unit-b",
        ),
        (
            "vnetctl watch --from 1 | tail",
            "the placements and presented events",
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_line_up() {
        assert_eq!(
            aligned(&[
                ("vnetctl a", "one"),
                ("vnetctl bbb", ""),
                ("vnetctl cc", "two")
            ]),
            vec!["vnetctl a    # one", "vnetctl bbb", "vnetctl cc   # two"]
        );
    }

    #[test]
    fn printed_instructions_name_the_pids_to_kill_and_the_commands() {
        let view = DemoView {
            endpoints: "127.0.0.1:7001".into(),
            data_dir: "/d".into(),
            profiles_presented: 6,
            nodes: crate::demo::plan::plan(7000)
                .unwrap()
                .into_iter()
                .map(|plan| DemoNodeView {
                    switch: plan.switch_addr.as_ref().map(|_| DemoSwitchView {
                        log: "/d/switch.log".into(),
                        journal: "/d/switch.journal".into(),
                        pid: 20,
                    }),
                    plan,
                    data_dir: "/d".into(),
                    log: "/d/vnetd.log".into(),
                    pid: 10,
                })
                .collect(),
            setup: vec!["export VNET_ENDPOINTS=127.0.0.1:9001".into()],
            try_commands: try_commands(),
            planned_moves: planned_moves(),
            failover: FailoverDemoView {
                unit: FAILOVER_UNIT,
                kill_command: "kill -9 11 12".into(),
                then: failover_commands(),
            },
            data_plane: Vec::new(),
        };
        let text = view.text();
        assert!(text.contains("6 profiles are presented"), "{text}");
        assert!(
            text.contains("first:\n  export VNET_ENDPOINTS=127.0.0.1:9001\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "kill unit-a's vnetd and its switch (it stays down until the demo \
                 restarts):\n  kill -9 11 12\n"
            ),
            "{text}"
        );
        for command in [
            "vnetctl drain unit-a --wait",
            "vnetctl undrain unit-a",
            "vnetctl failover db-01 --to unit-a",
            "vnetctl failover --from unit-b",
            "failed_over on unit-b",
            // Every vnetd's and every switch's metrics, to point Prometheus at.
            "metrics: http://127.0.0.1:7301/metrics",
            "metrics: http://127.0.0.1:7302/metrics",
            "metrics: http://127.0.0.1:7303/metrics",
            "metrics: http://127.0.0.1:7401/metrics",
            "metrics: http://127.0.0.1:7402/metrics",
        ] {
            assert!(text.contains(command), "{command} missing from:\n{text}");
        }
    }
}
