//! Network namespaces for partition tests: one bridge in the root namespace (with an address,
//! so tests, the coordinator and the writer reach every member), and per member a namespace
//! joined to the bridge by a veth pair, with its own address. `isolate` takes a member's
//! bridge-side link down (nothing reaches it, it reaches nothing), `heal` brings it back.
//! Everything is deleted on drop. Needs root and `ip` (iproute2); fails loudly otherwise.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The bridge, namespaces and links of one test.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    /// Per member: namespace name, root-side veth name, address.
    pub members: Vec<NetMember>,
    /// Address of the root namespace on the bridge.
    pub gateway: String,
}

/// One member's namespace.
#[derive(Debug, Clone)]
pub struct NetMember {
    pub netns: String,
    pub outside: String,
    pub address: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running ip {}: {e} (install iproute2)", args.join(" ")))?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Network {
    /// Create a bridge and `count` namespaces on a /24 of its own; panics with the reason when
    /// network namespaces are unavailable.
    pub fn create(count: usize) -> Network {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100_000, n);
        let net = format!("10.{}.{}", 100 + pid % 100, n % 250);
        let mut network = Network {
            bridge: format!("pgb{tag}"),
            members: Vec::new(),
            gateway: format!("{net}.1"),
        };
        let result = (|| -> anyhow::Result<()> {
            ip(&["link", "add", &network.bridge, "type", "bridge"])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/24", network.gateway),
                "dev",
                &network.bridge,
            ])?;
            ip(&["link", "set", &network.bridge, "up"])?;
            for i in 0..count {
                let member = NetMember {
                    netns: format!("pgn{tag}m{i}"),
                    outside: format!("pgv{tag}m{i}"),
                    address: format!("{net}.{}", 11 + i),
                };
                ip(&["netns", "add", &member.netns])?;
                network.members.push(member.clone());
                let inside = format!("pgi{tag}m{i}");
                ip(&[
                    "link",
                    "add",
                    &member.outside,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &inside,
                ])?;
                ip(&["link", "set", &inside, "netns", &member.netns])?;
                ip(&["link", "set", &member.outside, "master", &network.bridge])?;
                ip(&["link", "set", &member.outside, "up"])?;
                let ns = &member.netns;
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{}/24", member.address),
                    "dev",
                    &inside,
                ])?;
                ip(&["-n", ns, "link", "set", &inside, "up"])?;
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            panic!("setting up network namespaces (needs root and `ip netns`): {e:#}");
        }
        network
    }

    /// Cut member `i` off the bridge.
    pub fn isolate(&self, i: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &self.members[i].outside, "down"])
    }

    /// Reconnect member `i`.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &self.members[i].outside, "up"])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for member in &self.members {
            let _ = ip(&["link", "del", &member.outside]);
            let _ = ip(&["netns", "del", &member.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
