//! A private network of hosts for the fleet tests: network namespaces made with
//! `ip netns add`, each joined by a veth pair to a bridge in the root namespace, on a
//! /24 of 10.213.0.0/16 that no interface or route of this machine uses. The bridge
//! holds the first address (a server in the root namespace listens there); host `i`
//! has `.11 + i` on its `eth0`. Everything made is removed on drop, also when a test
//! panics half-way through the setup; the machine is left as it was.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// Where `ip netns` keeps its namespace handles (a bind mount made on first use).
const NETNS_DIR: &str = "/run/netns";

/// One host of the network.
#[derive(Debug, Clone)]
pub struct NetHost {
    /// The namespace's name, for `ip netns exec`.
    pub netns: String,
    pub addr: Ipv4Addr,
}

pub struct Network {
    /// The bridge's address in the root namespace.
    pub gateway: Ipv4Addr,
    pub hosts: Vec<NetHost>,
    bridge: Option<String>,
    /// Namespaces made so far (removed on drop).
    made: Vec<String>,
    /// The veth ends on the bridge (removed on drop, which removes their peers: a
    /// namespace's own interfaces go away only some time after the namespace).
    veths: Vec<String>,
    /// `/run/netns` did not exist before: removed again on drop when nothing is left.
    netns_dir_is_ours: bool,
}

/// Runs `ip ARGS` and asserts it succeeded.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The interface names and namespace names of this machine, to prove a test left
/// none behind.
pub fn snapshot() -> (Vec<String>, Vec<String>) {
    let links = ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_string())
        .collect();
    let namespaces = ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    (links, namespaces)
}

impl Network {
    /// `hosts` namespaces on a free /24, each reachable from the root namespace (and from
    /// each other) through the bridge.
    pub fn new(hosts: usize) -> Network {
        crate::require_root();
        assert!((1..=200).contains(&hosts));
        let pid = std::process::id();
        let mut net = Network {
            gateway: Ipv4Addr::UNSPECIFIED,
            hosts: Vec::new(),
            bridge: None,
            made: Vec::new(),
            veths: Vec::new(),
            netns_dir_is_ours: !Path::new(NETNS_DIR).exists(),
        };
        let subnet = free_subnet(pid);
        net.gateway = Ipv4Addr::new(10, 213, subnet, 1);
        // Interface names have at most 15 bytes.
        let tag = format!("{:x}", pid & 0xff_ffff);
        let bridge = format!("ptbr{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        net.bridge = Some(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.gateway),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..hosts {
            let netns = format!("pam_totp-{pid}-h{}", i + 1);
            ip(&["netns", "add", &netns]);
            net.made.push(netns.clone());
            let outside = format!("pt{tag}h{}", i + 1);
            // The peer `eth0` lives in the namespace.
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ]);
            net.veths.push(outside.clone());
            ip(&["link", "set", &outside, "master", &bridge, "up"]);
            let addr = Ipv4Addr::new(10, 213, subnet, 11 + i as u8);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            net.hosts.push(NetHost { netns, addr });
        }
        net
    }

    /// The network, as CIDR.
    pub fn cidr(&self) -> String {
        let [a, b, c, _] = self.gateway.octets();
        format!("{a}.{b}.{c}.0/24")
    }
}

/// A /24 of 10.213.0.0/16 that no address or route of this machine touches, chosen
/// from the process id (tests of several processes may run at once).
fn free_subnet(pid: u32) -> u8 {
    let used = format!(
        "{}\n{}",
        ip(&["-4", "addr"]),
        ip(&["-4", "route", "show", "table", "all"])
    );
    assert!(
        !used.contains("10.213.0.0/16"),
        "10.213.0.0/16 is in use here"
    );
    for k in 0..250u32 {
        let subnet = ((pid + k) % 250 + 1) as u8;
        if !used.contains(&format!("10.213.{subnet}.")) {
            return subnet;
        }
    }
    panic!("no free /24 in 10.213.0.0/16");
}

impl Drop for Network {
    fn drop(&mut self) {
        for veth in self.veths.drain(..) {
            let _ = Command::new("ip").args(["link", "del", &veth]).status();
        }
        for netns in self.made.drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &netns]).status();
        }
        if let Some(bridge) = self.bridge.take() {
            let _ = Command::new("ip").args(["link", "del", &bridge]).status();
        }
        // `ip netns add` bind-mounted /run/netns onto itself the first time; undo that
        // when it was this network's doing and no namespace is left in it.
        if self.netns_dir_is_ours {
            let empty = std::fs::read_dir(NETNS_DIR).is_ok_and(|mut d| d.next().is_none());
            if empty {
                for _ in 0..2 {
                    if Command::new("umount")
                        .arg(NETNS_DIR)
                        .stderr(std::process::Stdio::null())
                        .status()
                        .map_or(true, |s| !s.success())
                    {
                        break;
                    }
                }
                let _ = std::fs::remove_dir(NETNS_DIR);
            }
        }
    }
}
