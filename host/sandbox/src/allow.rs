//! The allow-list of hosts a hook call may send HTTP requests to.

use std::fmt;
use std::net::IpAddr;

/// Hosts a call may reach. Entries are `host` (any port) or `host:port` (that port only);
/// IPv6 addresses are written bare (`::1`) or bracketed (`[::1]:8080`). Matching is exact
/// (case-insensitive for names): `example.com` does not allow `api.example.com`. A `*.` prefix
/// allows every name below a domain: `*.nifi.svc` allows `nifi-0.nifi.svc` and
/// `a.b.nifi.svc`, but not `nifi.svc` itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The host, or for a `*.` entry the domain below which names match.
    host: String,
    port: Option<u16>,
    /// A `*.domain` entry.
    subdomains: bool,
}

impl Entry {
    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.subdomains {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
        } else {
            self.host == host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

impl AllowList {
    /// An allow-list from entries; an entry that cannot be read (`host:notaport`) is kept as a
    /// host name that matches nothing real, never as a wildcard.
    pub fn new<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Self {
        AllowList {
            entries: entries
                .into_iter()
                .filter_map(|e| parse_entry(e.as_ref()))
                .collect(),
        }
    }

    /// Whether no host is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request to `host` on `port` is allowed (`host` as in a URI authority, IPv6
    /// with or without brackets). IP addresses match in their canonical form
    /// (`::ffff:10.0.0.1` is `10.0.0.1`); other spellings (`10.1`) match only themselves,
    /// and [`crate::Egress`] refuses them before asking.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        self.entries.iter().any(|e| e.matches(&host, port))
    }

    /// Whether an entry is the address `ip` itself (not a name resolving to it) and allows
    /// `port`.
    pub(crate) fn names_ip(&self, ip: IpAddr, port: u16) -> bool {
        self.entries.iter().any(|e| {
            !e.subdomains
                && e.port.is_none_or(|p| p == port)
                && e.host.parse::<IpAddr>().is_ok_and(|h| h == ip)
        })
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in &self.entries {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            if e.subdomains {
                f.write_str("*.")?;
            }
            match (e.host.contains(':'), e.port) {
                (true, Some(p)) => write!(f, "[{}]:{p}", e.host)?,
                (false, Some(p)) => write!(f, "{}:{p}", e.host)?,
                (_, None) => f.write_str(&e.host)?,
            }
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

fn normalize_host(host: &str) -> String {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host,
    }
}

fn parse_entry(raw: &str) -> Option<Entry> {
    let raw = raw.trim();
    if let Some(domain) = raw.strip_prefix("*.") {
        // Names only: a wildcard over an address, or a bare `*.`, allows nothing.
        let entry = parse_entry(domain)?;
        let name = !entry.subdomains
            && !entry.host.is_empty()
            && !entry.host.contains(['*', ':'])
            && entry.host.parse::<std::net::Ipv4Addr>().is_err();
        return name.then_some(Entry {
            subdomains: true,
            ..entry
        });
    }
    if raw.is_empty() {
        return None;
    }
    if let Some(rest) = raw.strip_prefix('[') {
        // [v6] or [v6]:port
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some(Entry {
            host: normalize_host(host),
            port,
            subdomains: false,
        });
    }
    if raw.matches(':').count() == 1 {
        let (host, port) = raw.split_once(':')?;
        return Some(Entry {
            host: normalize_host(host),
            port: Some(port.parse().ok()?),
            subdomains: false,
        });
    }
    // A host name, an IPv4 address, or a bare IPv6 address: any port.
    Some(Entry {
        host: normalize_host(raw),
        port: None,
        subdomains: false,
    })
}

#[cfg(test)]
mod tests {
    use super::AllowList;

    #[test]
    fn host_entries_match_any_port_and_host_port_entries_one() {
        let list = AllowList::new(["trino-0.example", "127.0.1.2:8080", "[::1]:9000", "fe80::1"]);
        assert!(list.allows("trino-0.example", 8080));
        assert!(list.allows("TRINO-0.example", 1));
        assert!(!list.allows("api.trino-0.example", 8080));
        assert!(list.allows("127.0.1.2", 8080));
        assert!(!list.allows("127.0.1.2", 8081));
        assert!(list.allows("[::1]", 9000));
        assert!(!list.allows("::1", 9001));
        assert!(list.allows("fe80::1", 443));
        assert!(list.allows("[::ffff:127.0.1.2]", 8080));
        let mapped = AllowList::new(["::ffff:10.0.0.1", "[0:0::1]:80"]);
        assert!(mapped.allows("10.0.0.1", 1));
        assert!(mapped.allows("::1", 80));
        assert!(mapped.names_ip("10.0.0.1".parse().unwrap(), 1));
        assert!(!mapped.names_ip("10.0.0.2".parse().unwrap(), 1));
        assert!(!mapped.names_ip("::1".parse().unwrap(), 81));
    }

    #[test]
    fn wildcard_entries_match_names_below_the_domain_only() {
        let list = AllowList::new(["*.nifi.ns.svc", "*.Trino.example:8080"]);
        for (host, port, allowed) in [
            ("nifi-0.nifi.ns.svc", 8443, true),
            ("a.b.nifi.ns.svc", 1, true),
            ("NIFI-1.nifi.ns.svc.", 1, true),
            ("nifi.ns.svc", 8443, false),
            ("evilnifi.ns.svc", 8443, false),
            ("nifi.ns.svc.evil", 8443, false),
            ("w-1.trino.example", 8080, true),
            ("w-1.trino.example", 8081, false),
        ] {
            assert_eq!(list.allows(host, port), allowed, "{host}:{port}");
        }
        assert_eq!(list.to_string(), "*.nifi.ns.svc, *.trino.example:8080");
    }

    #[test]
    fn wildcards_over_addresses_or_nothing_allow_nothing() {
        let list = AllowList::new(["*.", "*.127.0.0.1", "*.[::1]", "*.*.example"]);
        assert!(list.is_empty(), "{list}");
    }

    #[test]
    fn malformed_entries_allow_nothing() {
        let list = AllowList::new(["host:port", "[::1", ""]);
        assert!(list.is_empty());
        assert!(!list.allows("host", 80));
    }
}
