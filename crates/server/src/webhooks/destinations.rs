//! Where webhooks may be delivered: the allow and deny lists of `[webhooks]`, against server-side request
//! forgery. A webhook's URL is chosen by whoever holds an `admin` key for one queue; without these lists
//! it could make the server POST to the cloud metadata service (whose answers hold credentials) or to
//! link-local devices.
//!
//! An entry is a network (`10.0.0.0/8`, or one address) or a host name (`hooks.example.com`, or
//! `*.example.com` for every name below it). Names are matched against the URL's host name; networks
//! against every address the name resolves to (an IP literal is its own address). **The most specific
//! matching entry decides** — an exact name over a `*.suffix`, a longer suffix over a shorter, a longer
//! prefix over a shorter — and on a tie `allow` wins. So allowing `169.254.0.0/16` opens link-local
//! services but not `169.254.169.254/32`, which stays denied until it is allowed by name.
//!
//! Denied by default ([`DEFAULT_DENY`]): link-local networks and the cloud metadata addresses and name.
//! Loopback and private networks are allowed: internal services are a normal destination for a
//! self-hosted queue (deny them when queues' admins are not trusted with the internal network).

use std::net::IpAddr;

/// Denied unless allowed: link-local (IPv4 and IPv6), the metadata service's addresses (AWS, GCP, Azure
/// and most others on 169.254.169.254; AWS's IPv6 fd00:ec2::254; Alibaba's 100.100.100.200) and GCP's
/// metadata name. The single addresses inside 169.254.0.0/16 are listed too, so that allowing
/// link-local does not open the metadata service.
pub const DEFAULT_DENY: &[&str] = &[
    "169.254.0.0/16",
    "fe80::/10",
    "169.254.169.254",
    "fd00:ec2::254",
    "100.100.100.200",
    "metadata.google.internal",
];

/// One entry of a list, as written and as matched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    text: String,
    rule: Rule,
    /// One of [`DEFAULT_DENY`] (said so in refusals).
    default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Net {
        addr: IpAddr,
        prefix: u8,
    },
    Name(String),
    /// `*.suffix`: names ending in `.suffix`, not `suffix` itself.
    Below(String),
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty entry".into());
        }
        if t.contains("://") {
            return Err(format!(
                "{t:?} is a URL: give its host name, or a network (CIDR or address)"
            ));
        }
        if let Some((addr, prefix)) = t.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{t:?}: {addr:?} is not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{t:?}: the prefix length must be 0 to {max}"))?;
            let addr = canonical(addr);
            // A typo such as 10.0.0.1/8 would otherwise cover far more than its author read.
            if mask(addr, prefix) != addr {
                return Err(format!(
                    "{t:?} has bits set beyond its prefix: did you mean {}/{prefix}?",
                    mask(addr, prefix)
                ));
            }
            return Ok(Rule::Net { addr, prefix });
        }
        if let Ok(addr) = t.parse::<IpAddr>() {
            let addr = canonical(addr);
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Rule::Net { addr, prefix });
        }
        match t.strip_prefix("*.") {
            Some(suffix) => Ok(Rule::Below(
                host_name(suffix).map_err(|e| format!("{t:?}: {e}"))?,
            )),
            None => Ok(Rule::Name(host_name(t).map_err(|e| format!("{t:?}: {e}"))?)),
        }
    }

    /// How specific this rule's match of `ip` is, if it matches.
    fn matches_ip(&self, ip: IpAddr) -> Option<usize> {
        match self {
            Rule::Net { addr, prefix } if addr.is_ipv4() == ip.is_ipv4() => {
                (mask(ip, *prefix) == *addr).then_some(usize::from(*prefix))
            }
            _ => None,
        }
    }

    /// How specific this rule's match of the host name `name` (normalised) is, if it matches.
    fn matches_name(&self, name: &str) -> Option<usize> {
        match self {
            Rule::Name(n) => (n == name).then_some(usize::MAX),
            Rule::Below(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
                .then_some(suffix.len()),
            Rule::Net { .. } => None,
        }
    }
}

/// A host name as DNS sees it: lower case, IDNA (punycode) for non-ASCII, no trailing dot.
fn host_name(text: &str) -> Result<String, String> {
    let bad = |c: char| c.is_whitespace() || "/:@?#[]\\*%".contains(c);
    if text.is_empty() || text.contains(bad) {
        return Err("not a network (CIDR or address) or a host name (name or *.suffix)".into());
    }
    let url = reqwest::Url::parse(&format!("http://{text}/"))
        .map_err(|e| format!("not a host name: {e}"))?;
    match url.host_str() {
        Some(d) if literal(d).is_none() => Ok(normal_name(d)),
        _ => Err("not a network (CIDR or address) or a host name (name or *.suffix)".into()),
    }
}

/// The address of a URL's host (as `Url::host_str` gives it) when it is an IP literal.
fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address (`::ffff:169.254.169.254`) reaches the IPv4 address: it is matched as
/// that address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((bits & m).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((bits & m).to_be_bytes())
        }
    }
}

/// Why a destination was refused: a sentence for the dead delivery's error and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The webhook destination policy: the configured allow and deny lists over [`DEFAULT_DENY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    allow: Vec<Entry>,
    deny: Vec<Entry>,
}

impl Default for Destinations {
    /// Only [`DEFAULT_DENY`].
    fn default() -> Self {
        let deny = DEFAULT_DENY
            .iter()
            .map(|t| Entry {
                text: (*t).to_string(),
                rule: Rule::parse(t).expect("the defaults parse"),
                default: true,
            })
            .collect();
        Destinations {
            allow: Vec::new(),
            deny,
        }
    }
}

impl Destinations {
    /// The defaults with `allow` and, added to the default deny list, `deny`. An error names the entry
    /// (`allow[2]: ...`).
    pub fn new(allow: &[String], deny: &[String]) -> Result<Destinations, String> {
        let mut d = Destinations::default();
        for (i, text) in allow.iter().enumerate() {
            let rule = Rule::parse(text).map_err(|e| format!("allow[{i}]: {e}"))?;
            d.allow.push(Entry {
                text: text.trim().to_string(),
                rule,
                default: false,
            });
        }
        for (i, text) in deny.iter().enumerate() {
            let rule = Rule::parse(text).map_err(|e| format!("deny[{i}]: {e}"))?;
            d.deny.push(Entry {
                text: text.trim().to_string(),
                rule,
                default: false,
            });
        }
        Ok(d)
    }

    /// The deny entry that decides against `specificity`, if a deny entry is more specific than every
    /// matching allow entry.
    fn decide(&self, specificity: impl Fn(&Rule) -> Option<usize>) -> Option<&Entry> {
        fn best<'a>(
            list: &'a [Entry],
            specificity: &impl Fn(&Rule) -> Option<usize>,
        ) -> Option<(usize, &'a Entry)> {
            list.iter()
                .filter_map(|e| specificity(&e.rule).map(|s| (s, e)))
                .max_by_key(|(s, _)| *s)
        }
        let (denied_at, entry) = best(&self.deny, &specificity)?;
        match best(&self.allow, &specificity) {
            Some((allowed_at, _)) if allowed_at >= denied_at => None,
            _ => Some(entry),
        }
    }

    /// Refuses the host name `name` (not an IP literal) if a deny entry decides against it.
    pub fn check_name(&self, name: &str) -> Result<(), Refused> {
        let name = normal_name(name);
        match self.decide(|r| r.matches_name(&name)) {
            None => Ok(()),
            Some(e) => Err(Refused(format!(
                "the host name {name} is denied ({}{}); add it to [webhooks] allow to permit it",
                e.text,
                if e.default { ", a default" } else { "" }
            ))),
        }
    }

    /// Refuses `ip` (an address the destination resolved to, or its literal) if it is in a denied
    /// network that no more specific allow entry covers.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        match self.decide(|r| r.matches_ip(ip)) {
            None => Ok(()),
            Some(e) => Err(Refused(format!(
                "{ip} is in the denied network {}{}; add it to [webhooks] allow to permit it",
                e.text,
                if e.default {
                    " (a default: link-local or cloud metadata)"
                } else {
                    ""
                }
            ))),
        }
    }

    /// What can be told from the URL alone: its host name, or its address when it is an IP literal.
    /// A name's addresses are checked when it is resolved, at delivery.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match url.host_str() {
            Some(host) => match literal(host) {
                Some(ip) => self.check_ip(ip),
                None => self.check_name(host),
            },
            None => Err(Refused("the URL has no host".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn with(allow: &[&str], deny: &[&str]) -> Destinations {
        let s = |l: &[&str]| l.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        Destinations::new(&s(allow), &s(deny)).unwrap()
    }

    #[test]
    fn by_default_link_local_and_metadata_are_refused_and_loopback_and_private_allowed() {
        let d = Destinations::default();
        for refused in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            // IPv4-mapped IPv6 reaches the IPv4 address.
            "::ffff:169.254.169.254",
        ] {
            assert!(d.check_ip(ip(refused)).is_err(), "{refused}");
        }
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.0.10",
            "172.16.5.4",
            "fd12::1",
            "100.100.100.201",
            "93.184.215.14",
        ] {
            assert!(d.check_ip(ip(allowed)).is_ok(), "{allowed}");
        }
        assert!(d.check_name("metadata.google.internal").is_err());
        assert!(
            d.check_name("METADATA.google.internal.").is_err(),
            "case and a trailing dot change nothing"
        );
        assert!(d.check_name("hooks.example.com").is_ok());
        // The URL parser's reading of a host is the one checked: other spellings of an address too.
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:169.254.169.254]/",
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://169.254.169.254.:80/",
            "http://Metadata.Google.Internal/",
        ] {
            let u = reqwest::Url::parse(url).unwrap();
            assert!(d.check_url(&u).is_err(), "{url}");
        }
        let u = reqwest::Url::parse("http://127.0.0.1:9/hook").unwrap();
        assert!(d.check_url(&u).is_ok());
        let err = d.check_ip(ip("169.254.169.254")).unwrap_err().0;
        assert!(
            err.contains("169.254.169.254") && err.contains("allow"),
            "{err}"
        );
    }

    #[test]
    fn the_most_specific_entry_decides_and_allow_wins_a_tie() {
        // Allowing link-local opens it, but not the metadata address inside it (a more specific default).
        let d = with(&["169.254.0.0/16"], &[]);
        assert!(d.check_ip(ip("169.254.10.1")).is_ok());
        assert!(d.check_ip(ip("169.254.169.254")).is_err());
        // Naming the metadata address allows it: a tie with the default /32, and allow wins.
        let d = with(&["169.254.169.254"], &[]);
        assert!(d.check_ip(ip("169.254.169.254")).is_ok());
        assert!(
            d.check_ip(ip("169.254.10.1")).is_err(),
            "the rest stays denied"
        );
        let d = with(&["metadata.google.internal"], &[]);
        assert!(d.check_name("metadata.google.internal").is_ok());
        // Allow-only: deny everything, allow a network; a smaller deny inside it still holds.
        let d = with(&["10.20.0.0/16"], &["0.0.0.0/0", "::/0", "10.20.0.9"]);
        assert!(d.check_ip(ip("10.20.3.4")).is_ok());
        assert!(d.check_ip(ip("10.20.0.9")).is_err());
        assert!(d.check_ip(ip("8.8.8.8")).is_err());
        assert!(d.check_ip(ip("2001:db8::1")).is_err());
        // Names: exact over suffix, a longer suffix over a shorter.
        let d = with(
            &["hooks.corp.example", "*.ok.corp.example"],
            &["*.corp.example"],
        );
        assert!(d.check_name("hooks.corp.example").is_ok());
        assert!(d.check_name("a.ok.corp.example").is_ok());
        assert!(d.check_name("db.corp.example").is_err());
        assert!(
            d.check_name("corp.example").is_ok(),
            "*.x covers names below x, not x"
        );
        assert!(d.check_name("notcorp.example").is_ok());
    }

    #[test]
    fn bad_entries_are_refused_naming_them() {
        for (bad, says) in [
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("10.0.0.0/33", "0 to 32"),
            ("300.1.1.1/8", "not an IP address"),
            ("", "empty"),
            ("http://x/", "is a URL"),
            ("hooks/x", "not an IP address"),
            ("hooks example", "host name"),
            ("*", "host name"),
        ] {
            let err = Destinations::new(&[], &[bad.to_string()]).unwrap_err();
            assert!(
                err.starts_with("deny[0]") && err.contains(says),
                "{bad}: {err}"
            );
        }
        let d = with(&["  Hooks.Example.COM "], &["*.example.com"]);
        assert!(
            d.check_name("hooks.example.com").is_ok(),
            "entries are normalised"
        );
        assert!(d.check_name("other.example.com").is_err());
    }
}
