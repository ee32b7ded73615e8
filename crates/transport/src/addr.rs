//! Addresses across hosts: where to listen (a host, an interface), and what to announce
//! to peers, which must be an address they can reach — never `0.0.0.0`.
//!
//! A process bound to every interface announces, unless told (`--contact-address`, for
//! NAT and containers), the address its host uses to reach the scheduler: the one
//! address known to route between the two. A scheduler bound to every interface
//! announces its host's first non-loopback address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use crate::TransportError;

/// The IPv4 addresses of this host's network interfaces, by interface name, in the
/// order the system lists them.
pub fn interfaces() -> Result<Vec<(String, IpAddr)>, TransportError> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list it allocates, freed below by
    // freeifaddrs; every node is read only while the list is alive.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut node = list;
        while !node.is_null() {
            let ifa = &*node;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                    .to_string_lossy()
                    .into_owned();
                out.push((name, IpAddr::V4(ip)));
            }
            node = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    Ok(out)
}

/// The IPv4 address of interface `name` (`eth0`, `ib0`), or an error listing the
/// interfaces there are.
pub fn interface_ip(name: &str) -> Result<IpAddr, TransportError> {
    let all = interfaces()?;
    all.iter()
        .find(|(n, _)| n == name)
        .map(|(_, ip)| *ip)
        .ok_or_else(|| {
            let have: Vec<String> = all.iter().map(|(n, ip)| format!("{n} ({ip})")).collect();
            TransportError::Address(format!(
                "no interface {name:?} with an IPv4 address on this host; it has: {}",
                have.join(", ")
            ))
        })
}

/// The address this host would use as the source of packets to `to` (no packet is
/// sent): the host's address on the route to it.
pub fn route_source(to: SocketAddr) -> Option<IpAddr> {
    let local = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(local).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Resolves `tcp://host:port` (or `host:port`) to its first socket address.
pub fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
    let hp = addr.strip_prefix("tcp://").unwrap_or(addr);
    hp.to_socket_addrs()
        .map_err(|e| TransportError::Address(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| TransportError::Address(format!("{addr}: resolves to no address")))
}

/// This host's address for others to reach when nothing better is known: the first
/// non-loopback IPv4 address, else loopback.
pub fn host_ip() -> IpAddr {
    interfaces()
        .ok()
        .and_then(|l| l.into_iter().map(|(_, ip)| ip).find(|ip| !ip.is_loopback()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Where to listen: `host:port` from `--listen`, else `--interface`'s address or
/// `--host` (default `default_host`) with `port`.
pub fn bind_addr(
    listen: Option<&str>,
    host: Option<&str>,
    interface: Option<&str>,
    port: u16,
    default_host: &str,
) -> Result<String, TransportError> {
    if let Some(l) = listen {
        if host.is_some() || interface.is_some() {
            return Err(TransportError::Address(format!(
                "{l}: give --listen, or --host/--interface with a port, not both"
            )));
        }
        return Ok(l.strip_prefix("tcp://").unwrap_or(l).to_string());
    }
    let host = match (host, interface) {
        (Some(h), Some(i)) => {
            return Err(TransportError::Address(format!(
                "--host {h} and --interface {i}: give one of them"
            )))
        }
        (Some(h), None) => h.to_string(),
        (None, Some(i)) => interface_ip(i)?.to_string(),
        (None, None) => default_host.to_string(),
    };
    Ok(match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    })
}

/// The `tcp://ip:port` peers should use for a listener bound to `bound`: `contact` if
/// given (`host:port`, or a host alone to keep the bound port), else the bound address
/// unless it is unspecified (`0.0.0.0`, `::`), in which case this host's address on the
/// route to `toward` (the scheduler), else [`host_ip`].
pub fn contact_addr(
    bound: SocketAddr,
    contact: Option<&str>,
    toward: Option<SocketAddr>,
) -> Result<String, TransportError> {
    if let Some(c) = contact {
        let c = c.strip_prefix("tcp://").unwrap_or(c);
        if c.is_empty() {
            return Err(TransportError::Address(
                "an empty contact address".to_string(),
            ));
        }
        // `host:port`, `[v6]:port`, or a host alone (keeps the bound port).
        let has_port = match c.rsplit_once(':') {
            Some((h, p)) => p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')),
            None => false,
        };
        let hp = if has_port {
            c.to_string()
        } else if c.contains(':') && !c.starts_with('[') {
            format!("[{c}]:{}", bound.port())
        } else {
            format!("{c}:{}", bound.port())
        };
        return Ok(format!("tcp://{hp}"));
    }
    if !bound.ip().is_unspecified() {
        return Ok(format!("tcp://{bound}"));
    }
    let ip = toward
        .and_then(route_source)
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or_else(host_ip);
    Ok(format!("tcp://{}", SocketAddr::new(ip, bound.port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_listener_bound_to_every_interface_announces_the_route_to_the_scheduler() {
        let bound = sa("0.0.0.0:4000");
        // The route to a loopback scheduler starts at loopback.
        assert_eq!(
            contact_addr(bound, None, Some(sa("127.0.0.1:8786"))).unwrap(),
            "tcp://127.0.0.1:4000"
        );
        // Never 0.0.0.0, whatever is known.
        for toward in [None, Some(sa("127.0.0.1:1"))] {
            let a = contact_addr(bound, None, toward).unwrap();
            assert!(!a.contains("0.0.0.0"), "{a}");
            assert!(a.ends_with(":4000"), "{a}");
        }
        // A specific address is announced as it is.
        assert_eq!(
            contact_addr(sa("10.1.2.3:5"), None, Some(sa("127.0.0.1:1"))).unwrap(),
            "tcp://10.1.2.3:5"
        );
    }

    #[test]
    fn a_contact_address_wins_and_may_keep_the_bound_port() {
        let bound = sa("0.0.0.0:4000");
        let c = |s: &str| contact_addr(bound, Some(s), None).unwrap();
        assert_eq!(c("203.0.113.9:31000"), "tcp://203.0.113.9:31000");
        assert_eq!(c("tcp://gw.example:31000"), "tcp://gw.example:31000");
        assert_eq!(c("203.0.113.9"), "tcp://203.0.113.9:4000");
        assert_eq!(c("node7.example"), "tcp://node7.example:4000");
        assert_eq!(c("[2001:db8::1]:9"), "tcp://[2001:db8::1]:9");
        assert_eq!(c("2001:db8::1"), "tcp://[2001:db8::1]:4000");
        assert!(contact_addr(bound, Some(""), None).is_err());
    }

    #[test]
    fn the_bind_address_comes_from_listen_or_host_or_interface_with_the_port() {
        assert_eq!(
            bind_addr(Some("tcp://0.0.0.0:7"), None, None, 0, "127.0.0.1").unwrap(),
            "0.0.0.0:7"
        );
        assert_eq!(
            bind_addr(None, Some("0.0.0.0"), None, 8786, "127.0.0.1").unwrap(),
            "0.0.0.0:8786"
        );
        assert_eq!(
            bind_addr(None, None, None, 0, "127.0.0.1").unwrap(),
            "127.0.0.1:0"
        );
        assert_eq!(bind_addr(None, Some("::"), None, 5, "x").unwrap(), "[::]:5");
        assert_eq!(
            bind_addr(None, None, Some("lo"), 9, "x").unwrap(),
            "127.0.0.1:9"
        );
        let e = bind_addr(None, None, Some("nosuch0"), 9, "x").unwrap_err();
        assert!(
            e.to_string().contains("nosuch0") && e.to_string().contains("lo (127.0.0.1)"),
            "{e}"
        );
        assert!(bind_addr(Some("1.2.3.4:5"), Some("0.0.0.0"), None, 0, "x").is_err());
        assert!(bind_addr(None, Some("0.0.0.0"), Some("lo"), 0, "x").is_err());
    }

    #[test]
    fn loopback_is_an_interface_and_the_host_has_an_address() {
        let all = interfaces().unwrap();
        assert!(
            all.iter()
                .any(|(n, ip)| n == "lo" && *ip == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{all:?}"
        );
        assert!(!host_ip().is_unspecified());
    }

    #[test]
    fn addresses_resolve_with_or_without_the_scheme() {
        assert_eq!(resolve("tcp://127.0.0.1:5").unwrap(), sa("127.0.0.1:5"));
        assert_eq!(resolve("localhost:5").unwrap().port(), 5);
        assert!(resolve("tcp://no-port").is_err());
    }
}
