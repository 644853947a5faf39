//! Egress policy: where deliveries may go. Guards against SSRF (an endpoint URL
//! pointing at cloud metadata or another address that must not be reached).
//!
//! [`EgressPolicy`] is a pure value built from the settings. It is applied at two
//! points: when an endpoint URL is registered or changed ([`EgressGuard::check_registration`]),
//! and on every attempt, after DNS resolution, so a name that resolved to a good
//! address at registration and to a refused one later (DNS rebinding) is still refused:
//! [`PolicyResolver`] is reqwest's resolver and drops refused addresses, and
//! [`EgressGuard::check_delivery_url`] covers IP-literal URLs, which reqwest never
//! hands to a resolver (checked when the dispatcher reads the endpoint, and refused at
//! each attempt while the URL stays).

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use prometheus::IntCounterVec;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// How long registration waits for DNS before deciding without the addresses.
const REGISTRATION_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Ranges no delivery may reach, whatever the lists say: "this network" and the
/// unspecified addresses, link-local (where cloud metadata services live) and the
/// metadata addresses outside link-local (AWS over IPv6, Alibaba Cloud).
const ALWAYS_REFUSED: &[&str] = &[
    "0.0.0.0/8",
    "169.254.0.0/16",
    "100.100.100.200/32",
    "::/128",
    "fe80::/10",
    "fd00:ec2::254/128",
];

/// Why a target is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is a link-local, cloud metadata or unspecified address, which deliveries never reach")]
    AlwaysRefused(IpAddr),
    #[error("{0} is on HOOKRELAY_EGRESS_DENY")]
    Denied(String),
    #[error("{0} is not on HOOKRELAY_EGRESS_ALLOW")]
    NotAllowed(String),
    #[error("http:// URLs are refused while HOOKRELAY_EGRESS_HTTPS_ONLY is true")]
    NotHttps,
    #[error("{name} resolves only to refused addresses ({addresses})")]
    OnlyRefusedAddresses { name: String, addresses: String },
    #[error("{0} is not on HOOKRELAY_EGRESS_ALLOW and did not resolve, so its addresses could not be checked")]
    Unresolvable(String),
    #[error("the URL cannot be parsed: {0}")]
    BadUrl(String),
}

/// A refusal with the host it concerns, as reported to admins and in `last_error`.
/// Names the host only: a URL's query string may carry the receiver's own token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("egress policy refused {host}: {reason}")]
pub struct EgressRefused {
    pub host: String,
    pub reason: Refusal,
}

/// Host names matched by a list entry: `example.com` is that host only,
/// `.example.com` is that host and every subdomain.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    name: String,
    subdomains: bool,
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        host == self.name
            || (self.subdomains
                && host.len() > self.name.len()
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.')
    }
}

/// One of `HOOKRELAY_EGRESS_ALLOW` / `_DENY`: networks and host names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetList {
    nets: Vec<IpNet>,
    hosts: Vec<HostPattern>,
}

impl TargetList {
    /// Parses comma-separated entries: a CIDR (`10.0.0.0/8`, `fd00::/8`), a single
    /// address, a host name (`hooks.example.com`) or a domain with its subdomains
    /// (`.example.com`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                list.nets.push(net.trunc());
            } else if let Ok(ip) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                list.nets.push(IpNet::from(canonical(ip)));
            } else {
                list.hosts.push(parse_host_pattern(entry)?);
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.hosts.is_empty()
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&ip))
    }

    fn matches_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.iter().any(|pattern| pattern.matches(&host))
    }
}

fn parse_host_pattern(entry: &str) -> Result<HostPattern, String> {
    let (subdomains, name) = match entry.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    let name = normalize_host(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "{entry:?} is neither a CIDR (10.0.0.0/8), an address, nor a host name (hooks.example.com, .example.com)"
        ));
    }
    Ok(HostPattern { name, subdomains })
}

/// Lower case, without the trailing dot of a fully qualified name.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The IPv4 address behind an IPv4-mapped IPv6 one (`::ffff:169.254.169.254`), which
/// the kernel connects to over IPv4; every other address as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The IPv4 address in a NAT64 address (`64:ff9b::/96`), which a NAT64 gateway would
/// forward to.
fn nat64_embedded(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let [a, b, c, d] = [s[6] >> 8, s[6] & 0xff, s[7] >> 8, s[7] & 0xff].map(|x| x as u8);
        Ipv4Addr::new(a, b, c, d)
    })
}

fn always_refused(ip: IpAddr) -> bool {
    static NETS: std::sync::OnceLock<Vec<IpNet>> = std::sync::OnceLock::new();
    let nets = NETS.get_or_init(|| ALWAYS_REFUSED.iter().map(|n| n.parse().expect("valid CIDR")).collect());
    let embedded = match ip {
        IpAddr::V6(v6) => nat64_embedded(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    [Some(ip), embedded]
        .into_iter()
        .flatten()
        .any(|ip| nets.iter().any(|net| net.contains(&ip)))
}

/// Where deliveries may go. Private (RFC 1918) and loopback targets are allowed by
/// default, since the gateway fronts internal services; the [`ALWAYS_REFUSED`]
/// ranges never are, even when listed in the allow list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// When set, only targets matching it are allowed.
    allow: Option<TargetList>,
    deny: TargetList,
    https_only: bool,
}

impl EgressPolicy {
    pub fn new(allow: Option<TargetList>, deny: TargetList, https_only: bool) -> Self {
        Self {
            allow,
            deny,
            https_only,
        }
    }

    /// Whether a delivery may connect to this address (an IP-literal URL).
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.verdict(None, Some(ip)).is_ok()
    }

    /// Whether this host name may be contacted at all; its addresses are checked
    /// separately once resolved ([`EgressPolicy::allows_resolved`]).
    pub fn allows_host(&self, name: &str) -> bool {
        self.verdict(Some(name), None).is_ok()
    }

    /// Whether a delivery to `name` may connect to `ip`, one of its addresses.
    pub fn allows_resolved(&self, name: &str, ip: IpAddr) -> bool {
        self.verdict(Some(name), Some(ip)).is_ok()
    }

    pub fn https_only(&self) -> bool {
        self.https_only
    }

    /// The rule: always-refused ranges, then the deny list (by name or address),
    /// then the allow list if set (by name or address). With a name and no address
    /// yet, an unlisted name passes if the allow list has networks its addresses
    /// might fall in.
    pub fn verdict(&self, name: Option<&str>, ip: Option<IpAddr>) -> Result<(), Refusal> {
        let ip = ip.map(canonical);
        if let Some(ip) = ip.filter(|ip| always_refused(*ip)) {
            return Err(Refusal::AlwaysRefused(ip));
        }
        if let Some(name) = name.filter(|n| self.deny.matches_host(n)) {
            return Err(Refusal::Denied(normalize_host(name)));
        }
        if let Some(ip) = ip.filter(|ip| self.deny.matches_ip(*ip)) {
            return Err(Refusal::Denied(ip.to_string()));
        }
        if let Some(allow) = &self.allow {
            let listed = name.is_some_and(|n| allow.matches_host(n)) || ip.is_some_and(|ip| allow.matches_ip(ip));
            let undecided = ip.is_none() && !allow.nets.is_empty();
            if !listed && !undecided {
                let target = ip
                    .map(|ip| ip.to_string())
                    .or(name.map(normalize_host))
                    .unwrap_or_default();
                return Err(Refusal::NotAllowed(target));
            }
        }
        Ok(())
    }

    /// The checks that need no DNS: the scheme, an IP-literal host, a host name.
    pub fn check_url(&self, url: &Url) -> Result<Target, EgressRefused> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let refuse = |reason| EgressRefused {
            host: host.clone(),
            reason,
        };
        if self.https_only && url.scheme() != "https" {
            return Err(refuse(Refusal::NotHttps));
        }
        match url.host() {
            Some(Host::Ipv4(ip)) => self.verdict(None, Some(ip.into())).map(|_| Target::Ip).map_err(refuse),
            Some(Host::Ipv6(ip)) => self.verdict(None, Some(ip.into())).map(|_| Target::Ip).map_err(refuse),
            Some(Host::Domain(name)) => self
                .verdict(Some(name), None)
                .map(|_| Target::Name(name.to_owned()))
                .map_err(refuse),
            None => Err(refuse(Refusal::BadUrl("no host".to_owned()))),
        }
    }

    /// What to keep of a name's addresses; an error when nothing is left.
    pub fn filter_resolved(&self, name: &str, addresses: Vec<IpAddr>) -> Result<Vec<IpAddr>, EgressRefused> {
        let (kept, refused): (Vec<IpAddr>, Vec<IpAddr>) =
            addresses.into_iter().partition(|ip| self.allows_resolved(name, *ip));
        if kept.is_empty() {
            let addresses = refused.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ");
            return Err(EgressRefused {
                host: name.to_owned(),
                reason: Refusal::OnlyRefusedAddresses {
                    name: normalize_host(name),
                    addresses,
                },
            });
        }
        if !refused.is_empty() {
            tracing::warn!(
                host = name,
                ?refused,
                "egress policy dropped some addresses of a delivery target"
            );
        }
        Ok(kept)
    }
}

/// A URL's host after [`EgressPolicy::check_url`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An IP literal, already checked in full.
    Ip,
    /// A host name whose addresses are still to be checked.
    Name(String),
}

/// Resolves a host name to its addresses.
pub type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;
pub type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// The operating system's resolver (getaddrinfo, off the async threads).
pub fn system_lookup() -> Lookup {
    Arc::new(|name: String| {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    })
}

/// The policy with what applies it: the DNS lookup, the optional proxy, and the
/// refusal counter. Cheap to clone; shared by the admin API and the delivery client.
#[derive(Clone)]
pub struct EgressGuard {
    policy: Arc<EgressPolicy>,
    lookup: Lookup,
    /// `HOOKRELAY_EGRESS_PROXY`: deliveries go through it; it resolves target names itself.
    proxy: Option<Arc<str>>,
    /// `hookrelay_egress_refused_total{stage}`, when metrics are kept.
    refused: Option<IntCounterVec>,
}

impl Default for EgressGuard {
    fn default() -> Self {
        Self::new(EgressPolicy::default(), system_lookup(), None, None)
    }
}

impl fmt::Debug for EgressGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressGuard")
            .field("policy", &self.policy)
            .field("proxy", &self.proxy.as_ref().map(|_| "***"))
            .finish()
    }
}

impl EgressGuard {
    pub fn new(policy: EgressPolicy, lookup: Lookup, proxy: Option<String>, refused: Option<IntCounterVec>) -> Self {
        Self {
            policy: Arc::new(policy),
            lookup,
            proxy: proxy.map(Arc::from),
            refused,
        }
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_deref()
    }

    fn count(&self, stage: &str) {
        if let Some(counter) = &self.refused {
            counter.with_label_values(&[stage]).inc();
        }
    }

    /// Checks an endpoint URL being registered or changed: the URL itself, then the
    /// addresses its name resolves to now. A name that does not resolve is accepted
    /// (it may exist later; each attempt is checked again), unless an allow list is
    /// set and does not name it.
    pub async fn check_registration(&self, url: &str) -> Result<(), EgressRefused> {
        let result = self.check_registration_inner(url).await;
        if result.is_err() {
            self.count("registration");
        }
        result
    }

    async fn check_registration_inner(&self, url: &str) -> Result<(), EgressRefused> {
        let url = Url::parse(url).map_err(|e| EgressRefused {
            host: String::new(),
            reason: Refusal::BadUrl(e.to_string()),
        })?;
        let Target::Name(name) = self.policy.check_url(&url)? else {
            return Ok(());
        };
        let lookup = tokio::time::timeout(REGISTRATION_LOOKUP_TIMEOUT, (self.lookup)(name.clone())).await;
        match lookup {
            Ok(Ok(addresses)) if !addresses.is_empty() => self.policy.filter_resolved(&name, addresses).map(|_| ()),
            _ => match &self.policy.allow {
                Some(allow) if !allow.matches_host(&name) => Err(EgressRefused {
                    host: name.clone(),
                    reason: Refusal::Unresolvable(name.clone()),
                }),
                _ => Ok(()),
            },
        }
    }

    /// Checks a delivery URL: scheme, IP literal, host name. The addresses of a name are
    /// checked by [`PolicyResolver`] at each connection (or, with a proxy, by the proxy).
    /// Returns the parsed URL, which requests then use as it is. The policy is fixed for
    /// the process, so the answer holds for as long as the URL does
    /// ([`Destination`](super::Destination) keeps it); nothing is counted here.
    pub fn check_delivery_url(&self, url: &str) -> Result<Url, EgressRefused> {
        Url::parse(url)
            .map_err(|e| EgressRefused {
                host: String::new(),
                reason: Refusal::BadUrl(e.to_string()),
            })
            .and_then(|url| self.policy.check_url(&url).map(|_| url))
    }

    /// Counts an attempt not made because its URL was refused.
    pub fn count_refused_attempt(&self) {
        self.count("delivery");
    }

    /// The DNS resolver for the delivery client.
    pub fn resolver(&self) -> PolicyResolver {
        PolicyResolver { guard: self.clone() }
    }
}

/// reqwest's DNS resolver for deliveries: resolves a name, then drops the addresses
/// the policy refuses. Connecting happens only to what is left, so the check holds
/// at the moment of connecting, whatever the name resolved to at registration.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    guard: EgressGuard,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let result = resolve_allowed(&guard, &name).await;
            if matches!(&result, Err(e) if e.is::<EgressRefused>()) {
                guard.count("delivery");
            }
            let addresses = result?;
            Ok(Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs)
        })
    }
}

async fn resolve_allowed(
    guard: &EgressGuard,
    name: &str,
) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
    guard.policy.verdict(Some(name), None).map_err(|reason| EgressRefused {
        host: name.to_owned(),
        reason,
    })?;
    let addresses = (guard.lookup)(name.to_owned()).await?;
    if addresses.is_empty() {
        return Err(format!("{name} has no addresses").into());
    }
    Ok(guard.policy.filter_resolved(name, addresses)?)
}

/// Parses `HOOKRELAY_EGRESS_PROXY`: an absolute http(s) URL.
pub fn parse_proxy(text: &str) -> Result<String, String> {
    let url = Url::from_str(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("expected an http:// or https:// proxy URL".to_owned());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: Option<&str>, deny: &str, https_only: bool) -> EgressPolicy {
        EgressPolicy::new(
            allow.map(|a| TargetList::parse(a).unwrap()),
            TargetList::parse(deny).unwrap(),
            https_only,
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn fake_lookup(answers: &'static [&'static str]) -> Lookup {
        Arc::new(move |_name: String| Box::pin(async move { Ok(answers.iter().map(|a| a.parse().unwrap()).collect()) }))
    }

    fn failing_lookup() -> Lookup {
        Arc::new(|name: String| {
            Box::pin(async move {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{name}: no such host"),
                ))
            })
        })
    }

    #[test]
    fn the_default_policy_allows_private_and_loopback_but_never_link_local_or_metadata() {
        let p = EgressPolicy::default();
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "::1",
            "fd12::1",
            "8.8.8.8",
            "2001:db8::1",
        ] {
            assert!(p.allows(ip(ok)), "{ok} should be allowed");
        }
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "100.100.100.200",
        ] {
            assert!(!p.allows(ip(bad)), "{bad} should be refused");
        }
    }

    #[test]
    fn the_always_refused_ranges_stay_refused_even_when_allow_listed() {
        let p = policy(Some("169.254.0.0/16,fe80::/10,0.0.0.0/0"), "", false);
        assert!(!p.allows(ip("169.254.169.254")));
        assert!(!p.allows(ip("fe80::1")));
        assert!(p.allows(ip("10.0.0.1")));
    }

    #[test]
    fn a_deny_list_refuses_networks_and_ipv4_mapped_forms_of_them() {
        let p = policy(None, "127.0.0.0/8, 10.9.0.0/16", false);
        assert!(!p.allows(ip("127.0.0.1")));
        assert!(!p.allows(ip("::ffff:127.0.0.1")));
        assert!(!p.allows(ip("10.9.1.1")));
        assert!(p.allows(ip("10.8.1.1")));
        assert!(p.allows(ip("::1")));
    }

    #[test]
    fn host_name_entries_match_the_host_and_with_a_leading_dot_its_subdomains() {
        let p = policy(None, "exact.example, .corp.example", false);
        for refused in [
            "exact.example",
            "EXACT.example.",
            "corp.example",
            "a.corp.example",
            "a.b.corp.example",
        ] {
            assert!(!p.allows_host(refused), "{refused}");
        }
        for allowed in ["sub.exact.example", "notcorp.example", "corp.example.org", "example"] {
            assert!(p.allows_host(allowed), "{allowed}");
        }
    }

    #[test]
    fn an_allow_list_admits_only_matching_names_or_addresses() {
        let p = policy(Some("10.0.0.0/8, .partner.example, localhost"), "", false);
        assert!(p.allows(ip("10.1.1.1")));
        assert!(!p.allows(ip("127.0.0.1")));
        assert!(p.allows_resolved("hooks.partner.example", ip("192.168.7.7")));
        assert!(p.allows_resolved("localhost", ip("127.0.0.1")));
        assert!(p.allows_resolved("unlisted.example", ip("10.2.2.2")));
        assert!(!p.allows_resolved("unlisted.example", ip("192.168.7.7")));
        // Before resolution an unlisted name may still land in 10.0.0.0/8.
        assert!(p.allows_host("unlisted.example"));
        let names_only = policy(Some(".partner.example"), "", false);
        assert!(!names_only.allows_host("unlisted.example"));
        assert!(!names_only.allows_resolved("hooks.partner.example", ip("169.254.169.254")));
    }

    #[test]
    fn the_deny_list_wins_over_the_allow_list() {
        let p = policy(Some("10.0.0.0/8,.example"), "10.66.0.0/16,bad.example", false);
        assert!(!p.allows(ip("10.66.1.1")));
        assert!(!p.allows_host("bad.example"));
        assert!(p.allows_host("good.example"));
    }

    #[test]
    fn list_entries_that_are_neither_networks_nor_names_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "*.example.com",
            "exa mple.com",
            "http://example.com",
            "..",
            "a..b",
            "::1/129",
        ] {
            assert!(TargetList::parse(bad).is_err(), "{bad}");
        }
        let list = TargetList::parse(" 10.1.2.3 , [::1], fd00::/8, .x.example,,").unwrap();
        assert_eq!(list.nets.len(), 3);
        assert_eq!(list.hosts.len(), 1);
    }

    #[test]
    fn urls_are_checked_for_scheme_and_ip_literal_in_every_spelling() {
        let p = policy(None, "", true);
        let refused = |url: &str| p.check_url(&Url::parse(url).unwrap()).unwrap_err().reason;
        assert_eq!(refused("http://example.com/"), Refusal::NotHttps);
        let p = EgressPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.169.254./",
            "http://[::ffff:169.254.169.254]/",
            "http://[fe80::1]/",
            "http://0/",
            "http://[::]/",
        ] {
            let result = p.check_url(&Url::parse(url).unwrap());
            assert!(
                matches!(
                    result,
                    Err(EgressRefused {
                        reason: Refusal::AlwaysRefused(_),
                        ..
                    })
                ),
                "{url}: {result:?}"
            );
        }
        assert_eq!(
            p.check_url(&Url::parse("https://hooks.example/x").unwrap()),
            Ok(Target::Name("hooks.example".into()))
        );
        assert_eq!(p.check_url(&Url::parse("http://127.0.0.1:9/").unwrap()), Ok(Target::Ip));
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_allowed_addresses_of_a_name_that_rebinds() {
        let guard = EgressGuard::new(
            EgressPolicy::default(),
            fake_lookup(&["169.254.169.254", "127.0.0.1"]),
            None,
            None,
        );
        let addrs: Vec<SocketAddr> = guard
            .resolver()
            .resolve("rebind.example".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec![SocketAddr::new(ip("127.0.0.1"), 0)]);
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_only_to_metadata_addresses() {
        let guard = EgressGuard::new(
            EgressPolicy::default(),
            fake_lookup(&["169.254.169.254", "::ffff:169.254.1.1"]),
            None,
            None,
        );
        let error = match guard.resolver().resolve("metadata.example".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        assert!(error.is::<EgressRefused>(), "{error}");
        assert!(
            error.to_string().starts_with("egress policy refused metadata.example"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_denied_name_without_looking_it_up() {
        let policy = policy(None, ".internal.example", false);
        let guard = EgressGuard::new(policy, failing_lookup(), None, None);
        let error = guard
            .resolver()
            .resolve("db.internal.example".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(error.is::<EgressRefused>(), "{error}");
    }

    #[tokio::test]
    async fn registration_refuses_names_that_resolve_only_to_refused_addresses() {
        let guard = EgressGuard::new(EgressPolicy::default(), fake_lookup(&["169.254.169.254"]), None, None);
        let error = guard.check_registration("https://metadata.example/").await.unwrap_err();
        assert!(matches!(error.reason, Refusal::OnlyRefusedAddresses { .. }), "{error}");
        let guard = EgressGuard::new(
            EgressPolicy::default(),
            fake_lookup(&["169.254.169.254", "10.0.0.1"]),
            None,
            None,
        );
        assert!(guard.check_registration("https://mixed.example/").await.is_ok());
    }

    #[tokio::test]
    async fn registration_accepts_an_unresolvable_name_unless_an_allow_list_leaves_it_out() {
        let guard = EgressGuard::new(EgressPolicy::default(), failing_lookup(), None, None);
        assert!(guard.check_registration("https://not-yet.example/").await.is_ok());
        let allow_nets = policy(Some("10.0.0.0/8"), "", false);
        let guard = EgressGuard::new(allow_nets, failing_lookup(), None, None);
        let error = guard.check_registration("https://not-yet.example/").await.unwrap_err();
        assert!(matches!(error.reason, Refusal::Unresolvable(_)), "{error}");
        let allow_name = policy(Some(".example"), "", false);
        let guard = EgressGuard::new(allow_name, failing_lookup(), None, None);
        assert!(guard.check_registration("https://not-yet.example/").await.is_ok());
    }

    #[test]
    fn proxies_must_be_http_urls() {
        assert!(parse_proxy("http://proxy.internal:3128").is_ok());
        assert!(parse_proxy("https://user:pw@proxy.internal").is_ok());
        for bad in ["socks5://proxy:1080", "proxy:3128", "http://", ""] {
            assert!(parse_proxy(bad).is_err(), "{bad}");
        }
    }
}
