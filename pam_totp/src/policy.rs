//! Who must use a second factor: exempt, mandatory or optional.

use crate::config::PolicyConfig;
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;

/// What the configuration asks of one user at one login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// No second factor is asked for.
    Exempt,
    /// A second factor is required.
    Mandatory,
    /// Asked only of users who enrolled.
    Optional,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Exempt => "exempt",
            Policy::Mandatory => "mandatory",
            Policy::Optional => "optional",
        }
    }
}

/// Why a policy applies, for logs and `totp-admin status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyReason {
    ExemptGroup(String),
    ExemptNetwork(Network),
    MandatoryHost,
    MandatoryGroup(String),
    Default,
}

impl fmt::Display for PolicyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyReason::ExemptGroup(g) => write!(f, "member of exempt group {g}"),
            PolicyReason::ExemptNetwork(n) => write!(f, "source inside exempt network {n}"),
            PolicyReason::MandatoryHost => f.write_str("mandatory for every user on this host"),
            PolicyReason::MandatoryGroup(g) => write!(f, "member of mandatory group {g}"),
            PolicyReason::Default => f.write_str("no rule applies"),
        }
    }
}

/// A group membership could not be resolved (NSS failed): the caller fails closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError(pub String);

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decides the policy for one login. `is_member(group)` answers whether the user belongs
/// to a group (primary or supplementary); it is called only for groups the configuration
/// names. `rhost` is `PAM_RHOST`, when there is one.
pub fn policy_for(
    config: &PolicyConfig,
    rhost: Option<&str>,
    is_member: &mut dyn FnMut(&str) -> Result<bool, LookupError>,
) -> Result<(Policy, PolicyReason), LookupError> {
    for group in &config.exempt_groups {
        if is_member(group)? {
            return Ok((Policy::Exempt, PolicyReason::ExemptGroup(group.clone())));
        }
    }
    if let Some(addr) = rhost.and_then(parse_host_address) {
        if let Some(net) = config.exempt_networks.iter().find(|n| n.contains(addr)) {
            return Ok((Policy::Exempt, PolicyReason::ExemptNetwork(*net)));
        }
    }
    if config.mandatory {
        return Ok((Policy::Mandatory, PolicyReason::MandatoryHost));
    }
    for group in &config.mandatory_groups {
        if is_member(group)? {
            return Ok((
                Policy::Mandatory,
                PolicyReason::MandatoryGroup(group.clone()),
            ));
        }
    }
    Ok((Policy::Optional, PolicyReason::Default))
}

/// `PAM_RHOST` as an address: IPv4, IPv6 (brackets and a zone allowed), IPv4-mapped
/// IPv6 as IPv4. A host name is not an address and matches no network.
pub fn parse_host_address(rhost: &str) -> Option<IpAddr> {
    let trimmed = rhost.trim_start_matches('[').trim_end_matches(']');
    let without_zone = trimmed.split('%').next().unwrap_or(trimmed);
    match without_zone.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = (prefix / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("bad network {text:?}: use CIDR notation such as \"10.0.0.0/8\"");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        // "192.0.2.99/8" would exempt all of 192/8: whoever wrote it meant something
        // else, a host or a smaller network, and is asked which.
        let network = masked(addr, prefix);
        if network != addr {
            return Err(format!(
                "{text}: host bits set; did you mean {network}/{prefix}?"
            ));
        }
        Ok(Network { addr, prefix })
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    fn clear<const N: usize>(mut octets: [u8; N], prefix: u8) -> [u8; N] {
        for (i, octet) in octets.iter_mut().enumerate() {
            let kept = usize::from(prefix).saturating_sub(i * 8).min(8);
            *octet &= (0xff00u16 >> kept) as u8;
        }
        octets
    }
    match addr {
        IpAddr::V4(a) => IpAddr::from(clear(a.octets(), prefix)),
        IpAddr::V6(a) => IpAddr::from(clear(a.octets(), prefix)),
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::from_text(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        mandatory: bool,
        mandatory_groups: &[&str],
        exempt_groups: &[&str],
        nets: &[&str],
    ) -> PolicyConfig {
        PolicyConfig {
            mandatory,
            mandatory_groups: mandatory_groups.iter().map(|s| s.to_string()).collect(),
            exempt_groups: exempt_groups.iter().map(|s| s.to_string()).collect(),
            exempt_networks: nets.iter().map(|s| s.parse().unwrap()).collect(),
            ..PolicyConfig::default()
        }
    }

    fn decide(c: &PolicyConfig, rhost: Option<&str>, groups: &[&str]) -> Policy {
        let mut member = |g: &str| Ok(groups.contains(&g));
        policy_for(c, rhost, &mut member).unwrap().0
    }

    /// Every combination of host-mandatory, mandatory group, exempt group and exempt
    /// network: exempt wins, then mandatory, else optional.
    #[test]
    fn every_combination() {
        for host in [false, true] {
            for in_mandatory_group in [false, true] {
                for in_exempt_group in [false, true] {
                    for from_exempt_net in [false, true] {
                        let c = config(host, &["admins"], &["svc"], &["10.0.0.0/8"]);
                        let mut groups = vec![];
                        if in_mandatory_group {
                            groups.push("admins");
                        }
                        if in_exempt_group {
                            groups.push("svc");
                        }
                        let rhost = if from_exempt_net {
                            "10.1.2.3"
                        } else {
                            "192.0.2.1"
                        };
                        let got = decide(&c, Some(rhost), &groups);
                        let want = if in_exempt_group || from_exempt_net {
                            Policy::Exempt
                        } else if host || in_mandatory_group {
                            Policy::Mandatory
                        } else {
                            Policy::Optional
                        };
                        assert_eq!(got, want, "host={host} mg={in_mandatory_group} eg={in_exempt_group} net={from_exempt_net}");
                    }
                }
            }
        }
    }

    #[test]
    fn reasons_name_the_rule() {
        let c = config(false, &["admins"], &["svc"], &["10.0.0.0/8"]);
        let mut admin = |g: &str| Ok(g == "admins");
        assert_eq!(
            policy_for(&c, None, &mut admin).unwrap().1,
            PolicyReason::MandatoryGroup("admins".into())
        );
        let mut none = |_: &str| Ok(false);
        let (_, reason) = policy_for(&c, Some("10.9.9.9"), &mut none).unwrap();
        assert_eq!(
            reason.to_string(),
            "source inside exempt network 10.0.0.0/8"
        );
    }

    #[test]
    fn groups_are_looked_up_only_when_named() {
        let c = config(true, &[], &[], &[]);
        let mut calls = 0;
        let mut member = |_: &str| {
            calls += 1;
            Ok(false)
        };
        assert_eq!(
            policy_for(&c, None, &mut member).unwrap().0,
            Policy::Mandatory
        );
        assert_eq!(calls, 0);
    }

    #[test]
    fn lookup_failure_is_an_error() {
        let c = config(false, &["admins"], &[], &[]);
        let mut failing = |_: &str| Err(LookupError("nss down".into()));
        assert!(policy_for(&c, None, &mut failing).is_err());
    }

    #[test]
    fn networks() {
        let c = config(
            true,
            &[],
            &[],
            &["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32", "127.0.0.1"],
        );
        for (rhost, exempt) in [
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("11.0.0.1", false),
            ("192.168.1.77", true),
            ("192.168.2.1", false),
            ("2001:db8::1", true),
            ("[2001:db8:ffff::1]", true),
            ("2001:db9::1", false),
            ("::ffff:10.1.1.1", true),
            ("fe80::1%eth0", false),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("10.0.0.1.evil.example", false),
            ("host.example", false),
            ("", false),
        ] {
            let got = decide(&c, Some(rhost), &[]);
            assert_eq!(got == Policy::Exempt, exempt, "{rhost}");
        }
    }

    #[test]
    fn odd_prefixes() {
        let n: Network = "172.16.0.0/12".parse().unwrap();
        assert!(n.contains("172.31.255.1".parse().unwrap()));
        assert!(!n.contains("172.32.0.1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_bits_are_refused_with_the_network_meant() {
        for (text, meant) in [
            ("192.0.2.99/8", "192.0.0.0/8"),
            ("10.1.2.3/16", "10.1.0.0/16"),
            ("172.31.0.0/12", "172.16.0.0/12"),
            ("10.0.0.1/31", "10.0.0.0/31"),
            ("1.2.3.4/0", "0.0.0.0/0"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("2001:db8:ffff::/33", "2001:db8:8000::/33"),
            ("fe80::1:2/127", "fe80::1:2/127"),
        ] {
            match text.parse::<Network>() {
                Err(e) if text != meant => {
                    assert_eq!(e, format!("{text}: host bits set; did you mean {meant}?"))
                }
                Ok(n) if text == meant => assert_eq!(n.to_string(), meant),
                other => panic!("{text}: {other:?}"),
            }
        }
        for exact in [
            "192.0.2.99/32",
            "192.0.2.99",
            "10.0.0.0/8",
            "::/0",
            "::1/128",
        ] {
            exact.parse::<Network>().unwrap();
        }
    }
}
