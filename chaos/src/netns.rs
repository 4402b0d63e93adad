//! The run's network: one namespace per node, joined by veth pairs to a
//! bridge in a hub namespace, plus one veth from the root namespace (where
//! the controller runs) to the same bridge.
//!
//! Owns: [`Net`] — creating it (`ip netns`, veth, bridge), the address of
//! each node, the command prefix that runs a program in a node's
//! namespace, cutting a node's link and restoring it (its bridge port is
//! detached: packets vanish silently, both ends keep carrier, as with a
//! failed switch port), and removing it all; [`cleanup_stale`], which
//! removes what a crashed earlier run left.
//!
//! Must not: touch namespaces or links that do not carry its run's tag.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Name prefix of everything a run creates (`shc<pid>-...`).
pub const PREFIX: &str = "shc";

/// One node: a namespace with one address.
#[derive(Debug, Clone)]
pub struct Node {
    /// Logical name (`mds`, `oss0`, `c1`).
    pub name: String,
    /// The namespace.
    pub ns: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its port on the hub's bridge.
    pub port: String,
}

/// The network of one run.
#[derive(Debug)]
pub struct Net {
    tag: String,
    hub: String,
    root_link: String,
    /// The controller's address (root namespace).
    pub root_addr: Ipv4Addr,
    /// The nodes.
    pub nodes: Vec<Node>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip(8) (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn ip_out(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("running ip(8) (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and root links of earlier runs whose process is gone.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for line in ip_out(&["netns", "list"])?.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !pid_alive(pid) {
            ip(&["netns", "del", name])?;
            removed.push(name.to_string());
        }
    }
    for line in ip_out(&["-o", "link", "show"])?.lines() {
        // "12: shc1234@if11: <...>"
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !pid_alive(pid) {
            ip(&["link", "del", name])?;
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}

impl Net {
    /// Creates the hub, the root link and one namespace per name, on
    /// `10.213.<subnet>.0/24` (nodes from .1, the controller .254).
    pub fn create(names: &[&str], subnet: u8) -> Result<Net> {
        let tag = format!("{PREFIX}{}", std::process::id());
        let hub = format!("{tag}-hub");
        let root_link = tag.clone();
        let net = Net {
            tag: tag.clone(),
            hub: hub.clone(),
            root_link: root_link.clone(),
            root_addr: Ipv4Addr::new(10, 213, subnet, 254),
            nodes: names
                .iter()
                .enumerate()
                .map(|(i, n)| Node {
                    name: n.to_string(),
                    ns: format!("{tag}-{n}"),
                    addr: Ipv4Addr::new(10, 213, subnet, i as u8 + 1),
                    port: format!("p{i}"),
                })
                .collect(),
        };
        // From here on, a failure removes what was made (Drop).
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&["link", "add", &root_link, "type", "veth", "peer", "name", "proot", "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", "proot", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{}/24", net.root_addr), "dev", &root_link])?;
        ip(&["link", "set", &root_link, "up"])?;
        for n in &net.nodes {
            ip(&["netns", "add", &n.ns])?;
            ip(&["-n", &n.ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &n.ns, "link", "add", "eth0", "type", "veth", "peer", "name", &n.port, "netns", &hub])?;
            ip(&["-n", &hub, "link", "set", &n.port, "master", "br0", "up"])?;
            ip(&["-n", &n.ns, "addr", "add", &format!("{}/24", n.addr), "dev", "eth0"])?;
            ip(&["-n", &n.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| format!("no node {name}"))
    }

    /// `ip netns exec <ns>`: run `program` after these.
    pub fn exec_prefix(&self, name: &str) -> Result<Vec<String>> {
        Ok(vec!["netns".into(), "exec".into(), self.node(name)?.ns.clone()])
    }

    /// Cuts `name` off the network (its bridge port detached).
    pub fn cut(&self, name: &str) -> Result<()> {
        let n = self.node(name)?;
        ip(&["-n", &self.hub, "link", "set", &n.port, "nomaster"])
    }

    /// Reconnects `name`.
    pub fn restore(&self, name: &str) -> Result<()> {
        let n = self.node(name)?;
        ip(&["-n", &self.hub, "link", "set", &n.port, "master", "br0"])
    }

    /// The run's tag (`shc<pid>`).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = ip(&["netns", "del", &n.ns]);
        }
        let _ = ip(&["link", "del", &self.root_link]);
        let _ = ip(&["netns", "del", &self.hub]);
    }
}
