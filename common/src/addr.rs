//! A `host:port` address in a configuration: an IP address or a DNS name, resolved when it is
//! dialled (every reconnect resolves again, so a coordinator that moves to a new address is
//! found without restarting its nodes). A port is required; a malformed value is refused when
//! the configuration is read, not at the first connection.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `host:port`: `203.0.113.10:7443`, `[2001:db8::1]:7443` or `coordinator.example.org:7443`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort(String);

/// Why a `host:port` was refused.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not host:port (an IP address or DNS name, then a port)")]
pub struct BadHostPort(String);

impl HostPort {
    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The port.
    pub fn port(&self) -> u16 {
        split(&self.0).map(|(_, p)| p).unwrap_or(0)
    }

    /// The host part (an IP address or a DNS name, without brackets).
    pub fn host(&self) -> &str {
        split(&self.0).map(|(h, _)| h).unwrap_or("")
    }

    /// The socket address when the host is an IP address (no lookup).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.0.parse().ok()
    }

    /// Resolves the address (a DNS lookup for a name); the first result.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Some(a) = self.socket_addr() {
            return Ok(a);
        }
        tokio::net::lookup_host(self.0.as_str())
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} resolves to no address", self.0),
                )
            })
    }
}

/// `(host, port)` of a well-formed `host:port`.
fn split(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port: u16 = p.parse().ok()?;
    if s.parse::<SocketAddr>().is_ok() {
        return Some((h.trim_start_matches('[').trim_end_matches(']'), port));
    }
    let name_ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (name_ok && port != 0).then_some((h, port))
}

impl FromStr for HostPort {
    type Err = BadHostPort;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        split(s)
            .map(|_| HostPort(s.to_string()))
            .ok_or_else(|| BadHostPort(s.to_string()))
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> Self {
        HostPort(a.to_string())
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_and_names_with_a_port_are_accepted_and_the_rest_refused() {
        for (s, host, port) in [
            ("203.0.113.10:7443", "203.0.113.10", 7443),
            ("[2001:db8::1]:7443", "2001:db8::1", 7443),
            ("coordinator:7443", "coordinator", 7443),
            ("coordinator.example.org:1", "coordinator.example.org", 1),
        ] {
            let h: HostPort = s.parse().expect(s);
            assert_eq!((h.host(), h.port()), (host, port), "{s}");
            assert_eq!(h.to_string(), s);
        }
        for bad in [
            "",
            "coordinator",
            "coordinator:",
            ":7443",
            "coordinator:70000",
            "coordinator:0",
            "coord inator:7443",
            "-coordinator:7443",
            "coordinator..org:7443",
            "http://coordinator:7443",
            "2001:db8::1:7443x",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad:?} must be refused");
        }
    }

    #[tokio::test]
    async fn a_name_resolves_and_an_ip_needs_no_lookup() {
        let ip: HostPort = "127.0.0.1:7443".parse().expect("ip");
        assert_eq!(
            ip.socket_addr(),
            Some("127.0.0.1:7443".parse().expect("addr"))
        );
        assert_eq!(ip.resolve().await.expect("ip").port(), 7443);
        let name: HostPort = "localhost:7443".parse().expect("name");
        assert_eq!(name.socket_addr(), None);
        let a = name.resolve().await.expect("localhost resolves");
        assert!(a.ip().is_loopback() && a.port() == 7443, "{a}");
        let nowhere: HostPort = "no-such-host.invalid:7443".parse().expect("well-formed");
        assert!(nowhere.resolve().await.is_err());
    }
}
