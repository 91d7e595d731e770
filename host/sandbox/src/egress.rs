//! Where a hook call's outgoing requests may go: the decision, apart from the I/O, so that
//! the operator can use it for its own clients too.
//!
//! Three parties narrow what a request may reach:
//!
//! - the Scaler's [`AllowList`] (its `allowedHosts`): which names and `host:port`s the
//!   plugin of this Scaler talks to;
//! - the cluster admin's [`NetworkGrant`]: which names and address ranges any Scaler may be
//!   allowed at all;
//! - [`ForbiddenAddrs`]: addresses never reached unless the grant names them explicitly
//!   (link-local and unspecified addresses always; the operator adds the API server and its
//!   own ports).
//!
//! [`Egress::check_authority`] reads a request's authority strictly (no userinfo, one
//! trailing dot at most, IP addresses only in their canonical spelling) and checks the
//! allow-list; [`Egress::resolve_checked`] then resolves the name once and checks every
//! address. A request connects only to an address returned by it, so the name is never
//! resolved a second time by someone else.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::Semaphore;

use crate::allow::AllowList;

/// Refusal reason: the Scaler's allow-list does not name the host (and port).
pub const NOT_ALLOWED: &str = "not on the Scaler's allowedHosts";
/// Refusal reason: the cluster admin's grant covers neither the name nor the address.
pub const NOT_GRANTED: &str = "not granted by the cluster policy";
/// Refusal reason: an IP address written in a spelling other than the canonical one
/// (`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`), or a name whose last label is a
/// number (which resolvers read as an address).
pub const NON_CANONICAL: &str = "non-canonical address spelling";
/// Refusal reason: `user@` in the authority.
pub const USERINFO: &str = "userinfo (user@) in the authority";
/// Refusal reason: the host is neither an IP address nor a valid DNS name.
pub const INVALID_HOST: &str = "not a valid host name";

/// What the cluster admin allows hooks to reach: host patterns (the syntax of [`AllowList`])
/// and address ranges. A resolved address is granted when a host pattern matches the name
/// the request used, or when the address is in one of the ranges.
///
/// A grant never unlocks a [`ForbiddenAddrs`] range by being broad: `0.0.0.0/0` grants every
/// ordinary address, but a forbidden one only when a grant range lies inside the forbidden
/// range (`169.254.169.254/32`), or a grant host entry is that very address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkGrant {
    hosts: AllowList,
    cidrs: Vec<IpNet>,
}

impl NetworkGrant {
    /// A grant of host patterns and address ranges. IPv4-mapped IPv6 ranges
    /// (`::ffff:10.0.0.0/104`) are read as the IPv4 ranges they are.
    pub fn new<S: AsRef<str>>(
        hosts: impl IntoIterator<Item = S>,
        cidrs: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        NetworkGrant {
            hosts: AllowList::new(hosts),
            cidrs: cidrs.into_iter().map(canonical_net).collect(),
        }
    }

    /// Every name and every address (`0.0.0.0/0` and `::/0`); forbidden addresses stay
    /// forbidden. For the CLI and tests, and what [`crate::CallOptions::new`] uses.
    pub fn any() -> Self {
        NetworkGrant {
            hosts: AllowList::default(),
            cidrs: vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap_or_default(),
                IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).unwrap_or_default(),
            ],
        }
    }

    /// Whether the grant covers `addr`, reached through the host `name` (the canonical host
    /// of the request: a name, or the address itself for an IP literal).
    fn grants(&self, name: &str, addr: SocketAddr) -> bool {
        self.hosts.allows(name, addr.port()) || self.cidrs.iter().any(|c| c.contains(&addr.ip()))
    }

    /// Whether the grant names `addr` inside the forbidden range `net` explicitly.
    fn names_explicitly(&self, net: &IpNet, addr: SocketAddr) -> bool {
        self.cidrs
            .iter()
            .any(|c| net.contains(c) && c.contains(&addr.ip()))
            || self.hosts.names_ip(addr.ip(), addr.port())
    }
}

/// One forbidden range.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forbidden {
    net: IpNet,
    port: Option<u16>,
    why: String,
}

/// Addresses no hook reaches unless the [`NetworkGrant`] names them explicitly.
///
/// [`ForbiddenAddrs::default`] holds link-local addresses (`169.254.0.0/16`, `fe80::/10`:
/// cloud metadata services live there) and the unspecified ones (`0.0.0.0/8`, `::/128`:
/// connecting to them reaches this host). The operator adds what is its own with
/// [`ForbiddenAddrs::with`]: the API server's addresses, its metrics port on loopback and on
/// its pod IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenAddrs {
    entries: Vec<Forbidden>,
}

impl Default for ForbiddenAddrs {
    fn default() -> Self {
        let net = |ip: IpAddr, len: u8| IpNet::new(ip, len).unwrap_or_default();
        let entry = |net: IpNet, why: &str| Forbidden {
            net,
            port: None,
            why: why.to_string(),
        };
        ForbiddenAddrs {
            entries: vec![
                entry(net(Ipv4Addr::new(169, 254, 0, 0).into(), 16), "link-local"),
                entry(
                    net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).into(), 10),
                    "link-local",
                ),
                entry(
                    net(Ipv4Addr::UNSPECIFIED.into(), 8),
                    "unspecified (it reaches this host)",
                ),
                entry(
                    net(Ipv6Addr::UNSPECIFIED.into(), 128),
                    "unspecified (it reaches this host)",
                ),
            ],
        }
    }
}

impl ForbiddenAddrs {
    /// Also forbid `net` (on `port` only, when given); `why` names it in refusals, as in
    /// `10.96.0.1:443 is the API server`.
    #[must_use]
    pub fn with(mut self, net: IpNet, port: Option<u16>, why: &str) -> Self {
        self.entries.push(Forbidden {
            net: canonical_net(net),
            port,
            why: why.to_string(),
        });
        self
    }

    /// The first forbidden range holding `addr` that the grant does not name explicitly.
    fn refusing(&self, grant: &NetworkGrant, addr: SocketAddr) -> Option<String> {
        self.entries
            .iter()
            .filter(|f| f.net.contains(&addr.ip()) && f.port.is_none_or(|p| p == addr.port()))
            .find(|f| !grant.names_explicitly(&f.net, addr))
            .map(|f| match f.port {
                Some(_) => format!("{addr} is {}", f.why),
                None => format!("{} is {}", addr.ip(), f.why),
            })
    }
}

/// The ranges as one line: `169.254.0.0/16 (link-local), 10.96.0.1/32 port 443 (the API
/// server)`.
impl fmt::Display for ForbiddenAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", entry.net)?;
            if let Some(port) = entry.port {
                write!(f, " port {port}")?;
            }
            write!(f, " ({})", entry.why)?;
        }
        Ok(())
    }
}

/// Limits of one call's outgoing requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimits {
    /// Requests of one call in flight at once (from sending to the end of the response
    /// body); one more fails at once with `connection-limit-reached`, it does not wait.
    pub max_concurrent_requests: usize,
    /// Largest request body sent, in bytes.
    pub max_request_body_bytes: u64,
    /// Largest response head (status line and headers) read, in bytes.
    pub max_response_header_bytes: usize,
}

impl Default for EgressLimits {
    fn default() -> Self {
        EgressLimits {
            max_concurrent_requests: 16,
            max_request_body_bytes: 16 * 1024 * 1024,
            max_response_header_bytes: 64 * 1024,
        }
    }
}

/// A bound on outgoing requests in flight across every call that shares it (clones share
/// one count). The operator makes one at startup and hands it to every call's options
/// ([`crate::CallOptions::with_connection_limit`]); a request waits for a free slot until
/// its call's deadline. Calls without one are bounded only by [`EgressLimits`].
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// At most `max` requests in flight across the calls sharing this limit.
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Requests that may start now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    pub(crate) fn semaphore(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }
}

/// Why a request may not go out, or could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The host (or authority) as the request named it.
    pub target: String,
    /// A short reason: one of [`NOT_ALLOWED`], [`NOT_GRANTED`], [`NON_CANONICAL`],
    /// [`USERINFO`], [`INVALID_HOST`], `<address> is <why>` for a forbidden address, or
    /// `cannot resolve the name: …`.
    pub reason: String,
    lookup_failed: bool,
}

impl Refusal {
    fn new(target: &str, reason: impl Into<String>) -> Self {
        Refusal {
            target: target.to_string(),
            reason: reason.into(),
            lookup_failed: false,
        }
    }

    /// Whether the name could not be resolved (no policy refused it).
    pub fn is_lookup_failure(&self) -> bool {
        self.lookup_failed
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// The host of a request, in its one canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address (IPv4-mapped IPv6 addresses as IPv4).
    Ip(IpAddr),
    /// A DNS name: lower case, without a trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    /// The name, or the address (IPv6 without brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A request's destination after [`Egress::check_authority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The canonical host: this is what is resolved, what TLS names (SNI and certificate
    /// check) and what the `Host` header carries.
    pub host: Host,
    /// The port (the scheme's default when the authority names none).
    pub port: u16,
    /// Whether the authority named the port.
    pub explicit_port: bool,
}

impl Target {
    /// The `Host` header value: the canonical host, bracketed for IPv6, with the port when
    /// the request named one.
    pub fn host_header(&self) -> String {
        let host = match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            other => other.to_string(),
        };
        if self.explicit_port {
            format!("{host}:{}", self.port)
        } else {
            host
        }
    }
}

/// Everything one call (or one of the operator's own clients) may reach, and how requests
/// are made: the Scaler's allow-list, the admin's grant, the forbidden addresses, TLS.
#[derive(Debug, Clone)]
pub struct Egress {
    allow: AllowList,
    grant: NetworkGrant,
    forbidden: ForbiddenAddrs,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Egress {
    /// Requests to hosts the Scaler allows, at addresses the admin grants and that are not
    /// forbidden; TLS trusts the public roots until [`Egress::with_tls`].
    pub fn new(allow: AllowList, grant: NetworkGrant, forbidden: ForbiddenAddrs) -> Self {
        Egress {
            allow,
            grant,
            forbidden,
            tls: None,
        }
    }

    /// Use this TLS client configuration (see [`crate::TlsSettings::client_config`]).
    #[must_use]
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The Scaler's allow-list.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// The TLS client configuration requests use: the one given, or the public roots.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, crate::SandboxError> {
        match &self.tls {
            Some(config) => Ok(config.clone()),
            None => crate::tls::public_roots_config(),
        }
    }

    /// Read a request's authority (`host`, `host:port`, `[v6]:port`) strictly and check it
    /// against the Scaler's allow-list. Pure: nothing is resolved.
    pub fn check_authority(&self, authority: &str, default_port: u16) -> Result<Target, Refusal> {
        if authority.contains('@') {
            return Err(Refusal::new(authority, USERINFO));
        }
        let (host, port) = split_authority(authority).map_err(|r| Refusal::new(authority, r))?;
        let host = canonical_host(host).map_err(|r| Refusal::new(authority, r))?;
        let target = Target {
            host,
            port: port.unwrap_or(default_port),
            explicit_port: port.is_some(),
        };
        if !self.allow.allows(&target.host.to_string(), target.port) {
            return Err(Refusal::new(authority, NOT_ALLOWED));
        }
        Ok(target)
    }

    /// Resolve a checked target once and check every address (grant, forbidden); all must
    /// pass, else the whole target is refused. An IP address resolves to itself.
    pub async fn resolve_target(&self, target: &Target) -> Result<Vec<SocketAddr>, Refusal> {
        let shown = target.host_header();
        let addrs: Vec<SocketAddr> = match &target.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
            Host::Name(name) => match tokio::net::lookup_host((name.as_str(), target.port)).await {
                Ok(found) => found
                    .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                    .collect(),
                Err(err) => {
                    return Err(Refusal {
                        lookup_failed: true,
                        ..Refusal::new(&shown, format!("cannot resolve the name: {err}"))
                    });
                }
            },
        };
        if addrs.is_empty() {
            return Err(Refusal {
                lookup_failed: true,
                ..Refusal::new(&shown, "cannot resolve the name: no address")
            });
        }
        let name = target.host.to_string();
        for addr in &addrs {
            self.check_addr(&name, *addr)
                .map_err(|reason| Refusal::new(&shown, reason))?;
        }
        let mut unique = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if !unique.contains(&addr) {
                unique.push(addr);
            }
        }
        Ok(unique)
    }

    /// [`Egress::check_authority`] for a bare host (`name`, `10.0.0.1`, `::1` or `[::1]`)
    /// and port, then [`Egress::resolve_target`]: the addresses a client may connect to.
    /// Bound it with a timeout: name resolution takes as long as the resolver does.
    pub async fn resolve_checked(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let target = self.check_authority(&authority, port)?;
        self.resolve_target(&target).await
    }

    /// Whether `addr`, reached through the canonical host `name`, may be connected to.
    fn check_addr(&self, name: &str, addr: SocketAddr) -> Result<(), String> {
        if let IpAddr::V6(v6) = addr.ip()
            && v6.segments()[..6] == [0; 6]
            && v6 != Ipv6Addr::UNSPECIFIED
            && v6 != Ipv6Addr::LOCALHOST
        {
            return Err(format!(
                "{} is a deprecated IPv4-compatible IPv6 address",
                addr.ip()
            ));
        }
        if !self.grant.grants(name, addr) {
            return Err(NOT_GRANTED.to_string());
        }
        match self.forbidden.refusing(&self.grant, addr) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// IPv4-mapped IPv6 ranges as the IPv4 ranges they are.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// Split an authority without userinfo into its host (brackets kept) and port.
fn split_authority(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(INVALID_HOST)?;
        let (host, after) = authority.split_at(end + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or(INVALID_HOST)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            // A bare IPv6 address: only brackets are canonical in an authority.
            Some((host, _)) if host.contains(':') => return Err(NON_CANONICAL),
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("not a valid port"),
                Ok(n) => Some(n),
            }
        }
        Some(_) => return Err("not a valid port"),
    };
    Ok((host, port))
}

/// The canonical form of a host, or why it has none: bracketed IPv6 (IPv4-mapped ones read
/// as IPv4), dotted-quad IPv4 as the standard library reads it (no octal, hex or short
/// forms), or a DNS name of letters, digits and hyphens whose last label is not a number.
/// One trailing dot is dropped; case is folded.
pub(crate) fn canonical_host(raw: &str) -> Result<Host, &'static str> {
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(INVALID_HOST)?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| INVALID_HOST)?;
        return Ok(Host::Ip(IpAddr::V6(ip).to_canonical()));
    }
    if raw.contains(':') {
        // A bare IPv6 address (as a caller of `resolve_checked` may write it).
        let ip: Ipv6Addr = raw.parse().map_err(|_| INVALID_HOST)?;
        return Ok(Host::Ip(IpAddr::V6(ip).to_canonical()));
    }
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if name.is_empty() || name.len() > 253 {
        return Err(INVALID_HOST);
    }
    let mut last = "";
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(INVALID_HOST);
        }
        last = label;
    }
    // What inet_aton would read as (part of) an address: 127.1, 2130706433, 0x7f000001,
    // 0177.0.0.1. No real top-level domain is numeric.
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(NON_CANONICAL);
    }
    Ok(Host::Name(name.to_string()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ipnet::IpNet;

    use super::{
        Egress, ForbiddenAddrs, Host, INVALID_HOST, NON_CANONICAL, NOT_ALLOWED, NOT_GRANTED,
        NetworkGrant, USERINFO, canonical_host,
    };
    use crate::AllowList;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn hosts_have_one_canonical_spelling() {
        for (raw, want) in [
            ("Example.COM", Ok(Host::Name("example.com".into()))),
            ("example.com.", Ok(Host::Name("example.com".into()))),
            ("example.com..", Err(INVALID_HOST)),
            ("127.0.0.1", Ok(Host::Ip("127.0.0.1".parse().unwrap()))),
            ("127.0.0.1.", Ok(Host::Ip("127.0.0.1".parse().unwrap()))),
            (
                "[::ffff:127.0.0.1]",
                Ok(Host::Ip("127.0.0.1".parse().unwrap())),
            ),
            ("[::1]", Ok(Host::Ip("::1".parse().unwrap()))),
            ("127.1", Err(NON_CANONICAL)),
            ("0x7f000001", Err(NON_CANONICAL)),
            ("0X7F000001", Err(NON_CANONICAL)),
            ("2130706433", Err(NON_CANONICAL)),
            ("0177.0.0.1", Err(NON_CANONICAL)),
            ("0x7f.0.0.1", Err(NON_CANONICAL)),
            ("1.2.3.example", Ok(Host::Name("1.2.3.example".into()))),
            ("deadbeef", Ok(Host::Name("deadbeef".into()))),
            ("-bad.example", Err(INVALID_HOST)),
            ("bad_name.example", Err(INVALID_HOST)),
            ("ünicode.example", Err(INVALID_HOST)),
            ("", Err(INVALID_HOST)),
            ("[127.0.0.1]", Err(INVALID_HOST)),
        ] {
            assert_eq!(canonical_host(raw), want, "{raw}");
        }
    }

    #[test]
    fn authorities_are_read_strictly_and_checked_against_the_allow_list() {
        let egress = Egress::new(
            AllowList::new(["allowed.example", "127.0.0.1:8080", "[::1]"]),
            NetworkGrant::any(),
            ForbiddenAddrs::default(),
        );
        let reason = |a: &str| {
            egress
                .check_authority(a, 80)
                .map(|_| ())
                .map_err(|r| r.reason)
        };
        assert_eq!(reason("allowed.example"), Ok(()));
        assert_eq!(reason("ALLOWED.example.:80"), Ok(()));
        assert_eq!(reason("127.0.0.1:8080"), Ok(()));
        assert_eq!(reason("[::ffff:127.0.0.1]:8080"), Ok(()));
        assert_eq!(reason("[::1]:9"), Ok(()));
        assert_eq!(reason("127.0.0.1:8081"), Err(NOT_ALLOWED.into()));
        assert_eq!(reason("127.1:8080"), Err(NON_CANONICAL.into()));
        assert_eq!(reason("allowed.example@evil.example"), Err(USERINFO.into()));
        assert_eq!(reason("evil.example@allowed.example"), Err(USERINFO.into()));
        assert_eq!(reason("::1:80"), Err(NON_CANONICAL.into()));
        assert_eq!(reason("allowed.example:"), Err("not a valid port".into()));
        assert_eq!(reason("allowed.example:0"), Err("not a valid port".into()));
        assert_eq!(
            reason("allowed.example:+80"),
            Err("not a valid port".into())
        );
        let target = egress
            .check_authority("Allowed.Example.", 443)
            .unwrap_or_else(|r| panic!("{r}"));
        assert_eq!(target.host_header(), "allowed.example");
        let target = egress
            .check_authority("[::1]:8443", 443)
            .unwrap_or_else(|r| panic!("{r}"));
        assert_eq!(target.host_header(), "[::1]:8443");
    }

    #[test]
    fn forbidden_addresses_need_an_explicit_grant() {
        let addr = |s: &str| {
            s.parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        let forbidden =
            ForbiddenAddrs::default().with(net("10.96.0.1/32"), Some(443), "the API server");
        assert!(
            forbidden.to_string().ends_with(
                "::/128 (unspecified (it reaches this host)), 10.96.0.1/32 port 443 (the API server)"
            ),
            "{forbidden}"
        );
        let allow = AllowList::new(["*.example", "169.254.169.254", "10.96.0.1", "10.0.0.5"]);
        let broad = Egress::new(allow.clone(), NetworkGrant::any(), forbidden.clone());
        assert_eq!(
            broad.check_addr("169.254.169.254", addr("169.254.169.254:80")),
            Err("169.254.169.254 is link-local".into())
        );
        assert_eq!(
            broad.check_addr("10.96.0.1", addr("10.96.0.1:443")),
            Err("10.96.0.1:443 is the API server".into())
        );
        assert_eq!(broad.check_addr("10.96.0.1", addr("10.96.0.1:80")), Ok(()));
        assert_eq!(
            broad.check_addr("x", addr("0.0.0.0:80")),
            Err("0.0.0.0 is unspecified (it reaches this host)".into())
        );
        assert_eq!(
            broad.check_addr("x", addr("[::7f00:1]:80")),
            Err("::7f00:1 is a deprecated IPv4-compatible IPv6 address".into())
        );
        let narrow = Egress::new(
            allow.clone(),
            NetworkGrant::new(["a.example"], [net("10.0.0.0/8")]),
            forbidden.clone(),
        );
        assert_eq!(narrow.check_addr("a.example", addr("192.0.2.1:80")), Ok(()));
        assert_eq!(
            narrow.check_addr("b.example", addr("192.0.2.1:80")),
            Err(NOT_GRANTED.into())
        );
        assert_eq!(narrow.check_addr("10.0.0.5", addr("10.0.0.5:80")), Ok(()));
        // A name granted by pattern does not unlock a forbidden address behind it.
        assert_eq!(
            narrow.check_addr("a.example", addr("169.254.169.254:80")),
            Err("169.254.169.254 is link-local".into())
        );
        // Named explicitly: a range inside the forbidden one, or the address as a host.
        for grant in [
            NetworkGrant::new(Vec::<String>::new(), [net("169.254.169.254/32")]),
            NetworkGrant::new(["169.254.169.254"], Vec::new()),
            NetworkGrant::new(Vec::<String>::new(), [net("::ffff:169.254.169.254/128")]),
        ] {
            let explicit = Egress::new(allow.clone(), grant, forbidden.clone());
            assert_eq!(
                explicit.check_addr("169.254.169.254", addr("169.254.169.254:80")),
                Ok(())
            );
            assert_eq!(
                explicit.check_addr("169.254.1.1", addr("169.254.1.1:80")),
                Err(NOT_GRANTED.into())
            );
        }
        // A range larger than the forbidden one does not name it.
        let wide = Egress::new(
            allow,
            NetworkGrant::new(Vec::<String>::new(), [net("169.254.0.0/15")]),
            forbidden,
        );
        assert_eq!(
            wide.check_addr("169.254.169.254", addr("169.254.169.254:80")),
            Err("169.254.169.254 is link-local".into())
        );
    }
}
