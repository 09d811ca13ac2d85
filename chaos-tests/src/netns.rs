//! Test hosts as network namespaces on one machine.
//!
//! Each host is a namespace with one interface, `eth0`, a veth whose peer sits in a bridge
//! namespace of its own (so nothing is added to the machine's own namespace). Addresses come
//! from 198.18.0.0/15, the block reserved for benchmarking, and no host has a default route:
//! a packet for anywhere but another test host has nowhere to go.
//!
//! Faults on the network are nftables rules inside a host's namespace (table
//! [`NFT_TABLE`]): drops by address, and `numgen random` for random loss. The whole table is
//! replaced atomically on every change, so the rules in force always equal what the harness
//! believes.
//!
//! Names: every namespace of a run starts with `vc<pid>x<n>-`, unique while the harness process
//! lives. [`sweep_leftovers`] removes the namespaces (and kills the processes inside them) of
//! runs whose harness is gone, e.g. one killed with SIGKILL, which no `Drop` could clean up.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// Namespace names of every run begin with this.
pub const NETNS_PREFIX: &str = "vc";
/// The nftables table the harness owns inside each host namespace.
pub const NFT_TABLE: &str = "vnetchaos";
/// First address of the test network; hosts get .1, .2, ... in order.
pub const NETWORK_BASE: [u8; 4] = [198, 18, 0, 0];
pub const NETWORK_PREFIX_LEN: u8 = 24;
/// Where `ip netns` keeps its namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

static NETWORK_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command and fails with its stderr when it does not succeed.
pub fn run_cmd(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> anyhow::Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {program} {}", args.join(" ")))?;
    // If the program exits without reading its input, its exit status and stderr say why
    // better than the broken pipe does.
    let written = child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(stdin.as_bytes());
    let output = child.wait_with_output()?;
    if let (Err(e), true) = (&written, output.status.success()) {
        bail!("write the input of {program}: {e}");
    }
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}\ninput was:\n{stdin}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Checks everything the harness needs from the machine, and says what is missing and why it
/// is needed. Never skipped: a chaos run that cannot build its hosts must fail, not pass.
pub fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the chaos harness must run as root: it creates network namespaces, veth pairs and \
             nftables rules for its test hosts (CI runs as root; run `sudo -E cargo test` or \
             `sudo -E cargo run -p chaos-tests` by hand)"
        );
    }
    for (program, arg, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        match Command::new(program).arg(arg).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => bail!(
                "`{program} {arg}` failed ({}): {}; the harness needs {program} from the \
                 {package} package",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => bail!(
                "`{program}` cannot be run ({e}); install the {package} package (`apt-get \
                 install -y {package}`; .ci/run does this)"
            ),
        }
    }
    // Prove namespaces and nftables work here (a container without CAP_SYS_ADMIN, or a kernel
    // without nf_tables, fails now with the reason rather than halfway through a run).
    let probe = format!(
        "{NETNS_PREFIX}{}x{}-probe",
        std::process::id(),
        NETWORK_SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    let result = run_cmd("ip", &["netns", "add", &probe])
        .context("cannot create a network namespace")
        .and_then(|_| {
            run_with_stdin(
                "ip",
                &["netns", "exec", &probe, "nft", "-f", "-"],
                &format!("table inet {NFT_TABLE} {{}}\n"),
            )
            .context("cannot use nftables inside a network namespace")
        });
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    result
}

/// Is `pid` a live chaos harness (this binary or a test binary of this crate)?
fn harness_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim().starts_with("chaos"))
        .unwrap_or(false)
}

/// Every namespace name `ip netns` lists.
fn list_netns() -> anyhow::Result<Vec<String>> {
    Ok(run_cmd("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The pid a namespace name was made by, if it is one of ours.
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(NETNS_PREFIX)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let after = &rest[digits.len()..];
    after.starts_with('x').then(|| digits.parse().ok())?
}

/// Kills every process inside namespace `ns` and deletes it.
pub fn destroy_netns(ns: &str) {
    if let Ok(pids) = run_cmd("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run_cmd("ip", &["netns", "del", ns]);
}

/// Removes the namespaces left by runs whose harness process is gone; returns their names.
pub fn sweep_leftovers() -> anyhow::Result<Vec<String>> {
    let mut swept = Vec::new();
    for ns in list_netns()? {
        if let Some(pid) = owner_pid(&ns) {
            if pid != std::process::id() && !harness_alive(pid) {
                destroy_netns(&ns);
                swept.push(ns);
            }
        }
    }
    Ok(swept)
}

/// Packet filtering in force in one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRules {
    /// Packets from these addresses are dropped on the way in.
    pub drop_from: BTreeSet<Ipv4Addr>,
    /// Packets to these addresses are dropped on the way out.
    pub drop_to: BTreeSet<Ipv4Addr>,
    /// Percent of every packet on `eth0`, in each direction, dropped at random.
    pub loss_percent: u64,
}

impl HostRules {
    /// The nft script that replaces the harness's table with these rules, atomically (one
    /// transaction: create if missing, flush, fill).
    pub fn nft_script(&self) -> String {
        let set = |addrs: &BTreeSet<Ipv4Addr>| {
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut input = vec!["iifname \"lo\" accept".to_string()];
        let mut output = vec!["oifname \"lo\" accept".to_string()];
        if !self.drop_from.is_empty() {
            input.push(format!("ip saddr {{ {} }} drop", set(&self.drop_from)));
        }
        if !self.drop_to.is_empty() {
            output.push(format!("ip daddr {{ {} }} drop", set(&self.drop_to)));
        }
        // nft takes 0..=99 on the right of `mod 100 <`; total loss is a plain drop.
        let loss = match self.loss_percent {
            0 => None,
            p if p >= 100 => Some("drop".to_string()),
            p => Some(format!("numgen random mod 100 < {p} drop")),
        };
        if let Some(rule) = loss {
            input.push(format!("iifname \"eth0\" {rule}"));
            output.push(format!("oifname \"eth0\" {rule}"));
        }
        let chain = |name: &str, hook: &str, rules: &[String]| {
            format!(
                "  chain {name} {{\n    type filter hook {hook} priority 0; policy accept;\n{}\n  }}\n",
                rules
                    .iter()
                    .map(|r| format!("    {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        format!(
            "table inet {NFT_TABLE} {{}}\nflush table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n{}{}}}\n",
            chain("input", "input", &input),
            chain("output", "output", &output)
        )
    }
}

/// One test host.
#[derive(Debug, Clone)]
pub struct HostNet {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
}

/// The test network of one run. Dropping it deletes every namespace (and so every veth and
/// process inside them).
#[derive(Debug)]
pub struct Network {
    pub prefix: String,
    bridge_ns: String,
    pub hosts: Vec<HostNet>,
    torn_down: bool,
}

impl Network {
    /// Builds the bridge namespace and one host namespace per name, in order (addresses .1,
    /// .2, ...). Cleans up whatever it built if any step fails.
    pub fn create(host_names: &[&str]) -> anyhow::Result<Network> {
        let prefix = format!(
            "{NETNS_PREFIX}{}x{}",
            std::process::id(),
            NETWORK_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut network = Network {
            bridge_ns: format!("{prefix}-br"),
            prefix,
            hosts: Vec::new(),
            torn_down: false,
        };
        // A namespace of ours with this exact prefix can only be left over from a dead process
        // that had our pid: remove it before reusing the names.
        for ns in list_netns()? {
            if ns.starts_with(&format!("{}-", network.prefix)) {
                destroy_netns(&ns);
            }
        }
        network.build(host_names)?;
        Ok(network)
    }

    fn build(&mut self, host_names: &[&str]) -> anyhow::Result<()> {
        let br = self.bridge_ns.clone();
        run_cmd("ip", &["netns", "add", &br])?;
        run_cmd("ip", &["-n", &br, "link", "set", "lo", "up"])?;
        run_cmd("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run_cmd("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        for (i, name) in host_names.iter().enumerate() {
            let ns = format!("{}-{name}", self.prefix);
            let [a, b, c, _] = NETWORK_BASE;
            let addr = Ipv4Addr::new(a, b, c, i as u8 + 1);
            run_cmd("ip", &["netns", "add", &ns])?;
            self.hosts.push(HostNet {
                name: name.to_string(),
                ns: ns.clone(),
                addr,
            });
            // Interface names are at most 15 bytes; both ends are created inside namespaces,
            // so they cannot collide with anything on the machine or in another run.
            let port = format!("p{i}");
            run_cmd(
                "ip",
                &[
                    "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                    "netns", &br,
                ],
            )?;
            run_cmd("ip", &["-n", &br, "link", "set", &port, "master", "br0"])?;
            run_cmd("ip", &["-n", &br, "link", "set", &port, "up"])?;
            run_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let cidr = format!("{addr}/{NETWORK_PREFIX_LEN}");
            run_cmd("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run_cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            self.set_rules(name, &HostRules::default())?;
        }
        Ok(())
    }

    pub fn host(&self, name: &str) -> &HostNet {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this network"))
    }

    /// Replaces the filtering rules of host `name`.
    pub fn set_rules(&self, name: &str, rules: &HostRules) -> anyhow::Result<()> {
        let host = self.host(name);
        run_with_stdin(
            "ip",
            &["netns", "exec", &host.ns, "nft", "-f", "-"],
            &rules.nft_script(),
        )
        .with_context(|| format!("set the nftables rules of {name}"))
    }

    /// The rules in force in host `name`, as nft lists them (for tests and post-mortems).
    pub fn list_rules(&self, name: &str) -> anyhow::Result<String> {
        let host = self.host(name);
        run_cmd(
            "ip",
            &[
                "netns", "exec", &host.ns, "nft", "list", "table", "inet", NFT_TABLE,
            ],
        )
    }

    /// Every namespace of this network.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.bridge_ns.clone())
            .chain(self.hosts.iter().map(|h| h.ns.clone()))
            .collect()
    }

    /// Kills what runs inside and deletes every namespace. Idempotent.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for ns in self.namespaces() {
            destroy_netns(&ns);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Rules per host for a set of network faults. `addrs` maps host name to address.
pub fn rules_by_host(
    addrs: &BTreeMap<String, Ipv4Addr>,
    cuts: &[(String, String)],
    one_way: &[(String, String)],
    loss: &BTreeMap<String, u64>,
) -> BTreeMap<String, HostRules> {
    let mut rules: BTreeMap<String, HostRules> = addrs
        .keys()
        .map(|h| (h.clone(), HostRules::default()))
        .collect();
    for (a, b) in cuts {
        // Dropping on both hosts, both ways, so a cut holds even if one side's rules lag.
        for (x, y) in [(a, b), (b, a)] {
            let r = rules.get_mut(x).expect("cut names a known host");
            r.drop_from.insert(addrs[y]);
            r.drop_to.insert(addrs[y]);
        }
    }
    for (from, to) in one_way {
        rules
            .get_mut(from)
            .expect("one-way loss names a known host")
            .drop_to
            .insert(addrs[to]);
        rules
            .get_mut(to)
            .expect("one-way loss names a known host")
            .drop_from
            .insert(addrs[from]);
    }
    for (host, percent) in loss {
        rules
            .get_mut(host)
            .expect("loss names a known host")
            .loss_percent = *percent;
    }
    rules
}

/// Runs `make_future()` to completion on a thread whose network namespace is `ns`, on a
/// single-threaded tokio runtime, and returns the thread's handle.
///
/// A socket belongs to the namespace of the thread that created it, so every socket the
/// future opens (a listener, a gRPC channel) lives in that host: this is how the harness's own
/// clients and proxies sit on test hosts while the harness runs in the machine's namespace.
/// The runtime is single-threaded so no task can run on a thread in another namespace.
pub fn spawn_in_netns<F, Fut, T>(
    ns: &str,
    thread_name: &str,
    make_future: F,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let path = format!("{NETNS_RUN_DIR}/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    let handle = std::thread::Builder::new()
        .name(thread_name.to_string())
        .spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("enter network namespace {path}"))?;
            drop(file);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("build a runtime inside a network namespace")?;
            runtime.block_on(make_future())
        })
        .context("spawn a thread")?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_our_names_only() {
        assert_eq!(owner_pid("vc1234x0-unit-a"), Some(1234));
        assert_eq!(owner_pid("vc1234x12-br"), Some(1234));
        assert_eq!(owner_pid("vc77x3-probe"), Some(77));
        assert_eq!(owner_pid("vc77probe"), None);
        assert_eq!(owner_pid("vcx-unit-a"), None);
        assert_eq!(owner_pid("vcs-thing"), None);
        assert_eq!(owner_pid("other"), None);
    }

    #[test]
    fn empty_rules_only_accept() {
        let script = HostRules::default().nft_script();
        assert!(script.contains("flush table inet vnetchaos"));
        assert!(!script.contains("drop"), "{script}");
    }

    #[test]
    fn rules_render_drops_and_loss() {
        let rules = HostRules {
            drop_from: [Ipv4Addr::new(198, 18, 0, 2)].into(),
            drop_to: [Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)].into(),
            loss_percent: 15,
        };
        let script = rules.nft_script();
        assert!(script.contains("ip saddr { 198.18.0.2 } drop"), "{script}");
        assert!(
            script.contains("ip daddr { 198.18.0.2, 198.18.0.3 } drop"),
            "{script}"
        );
        assert_eq!(script.matches("numgen random mod 100 < 15 drop").count(), 2);
        let total = HostRules {
            loss_percent: 100,
            ..HostRules::default()
        };
        assert!(
            !total.nft_script().contains("numgen"),
            "nft refuses `< 100`"
        );
    }

    #[test]
    fn cuts_are_symmetric_and_one_way_is_not() {
        let addrs: BTreeMap<String, Ipv4Addr> = [
            ("a".to_string(), Ipv4Addr::new(198, 18, 0, 1)),
            ("b".to_string(), Ipv4Addr::new(198, 18, 0, 2)),
            ("c".to_string(), Ipv4Addr::new(198, 18, 0, 3)),
        ]
        .into();
        let rules = rules_by_host(
            &addrs,
            &[("a".into(), "b".into())],
            &[("b".into(), "c".into())],
            &BTreeMap::from([("c".to_string(), 10)]),
        );
        assert!(rules["a"].drop_to.contains(&addrs["b"]));
        assert!(rules["b"].drop_from.contains(&addrs["a"]));
        assert!(rules["b"].drop_to.contains(&addrs["c"]));
        assert!(!rules["c"].drop_to.contains(&addrs["b"]));
        assert_eq!(rules["c"].loss_percent, 10);
        assert_eq!(rules["a"].loss_percent, 0);
    }
}
