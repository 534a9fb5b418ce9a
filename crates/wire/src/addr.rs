//! Replica addresses: `tcp://host:port` for remote replicas, `unix:///path` for a replica
//! on the same node (one less TCP stack in the data path).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a replica's data protocol listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplicaAddr {
    /// A TCP endpoint; `host` is a name or an IP literal (IPv6 without brackets).
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A unix stream socket at an absolute path.
    Unix(PathBuf),
}

/// Why a string is not a replica address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrParseError {
    /// No `scheme://` prefix.
    #[error("replica address {0:?} has no scheme: expected tcp://host:port or unix:///path")]
    MissingScheme(String),
    /// A scheme other than `tcp` or `unix`.
    #[error("replica address {addr:?} has unknown scheme {scheme:?}: expected tcp or unix")]
    UnknownScheme {
        /// The whole address.
        addr: String,
        /// The scheme found.
        scheme: String,
    },
    /// `tcp://` without `:port`.
    #[error("replica address {0:?} has no port: expected tcp://host:port")]
    MissingPort(String),
    /// A port that is not a number in 1..=65535.
    #[error("replica address {addr:?} has invalid port {port:?}: expected 1-65535")]
    BadPort {
        /// The whole address.
        addr: String,
        /// The port text found.
        port: String,
    },
    /// `tcp://:port` or a malformed bracketed IPv6 host.
    #[error("replica address {0:?} has an empty or malformed host")]
    BadHost(String),
    /// `unix://` followed by a relative or empty path.
    #[error("replica address {0:?} needs an absolute socket path: unix:///path/to/socket")]
    RelativePath(String),
    /// A path, query or fragment after a TCP endpoint.
    #[error("replica address {0:?} has trailing text after the port")]
    Trailing(String),
}

/// A replica serves its control API (gRPC) on the port after its data port: one
/// address names both, so a replica's record and the engine's list hold one string.
pub fn control_port(data_port: u16) -> Option<u16> {
    data_port.checked_add(1)
}

/// The control API address of a replica whose data listens on `data`.
pub fn control_socket_addr(data: SocketAddr) -> Result<SocketAddr, ControlAddrError> {
    let port = control_port(data.port()).ok_or(ControlAddrError::NoControlPort(data.port()))?;
    Ok(SocketAddr::new(data.ip(), port))
}

/// Why a replica address names no control API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlAddrError {
    /// Data port 65535 leaves no port for the control API.
    #[error("data port {0} leaves no room for the control port (the next one)")]
    NoControlPort(u16),
    /// A unix socket address: its replica's control API is found through its TCP address.
    #[error(
        "replica {0}: name replicas by their tcp://host:port address; the engine finds unix sockets itself"
    )]
    Unix(String),
}

impl ReplicaAddr {
    /// A unix socket address.
    pub fn unix(path: impl Into<PathBuf>) -> ReplicaAddr {
        ReplicaAddr::Unix(path.into())
    }

    /// The `http://host:port` URL of this replica's control API (see [`control_port`]);
    /// an IPv6 host is bracketed.
    pub fn control_url(&self) -> Result<String, ControlAddrError> {
        let ReplicaAddr::Tcp { host, port } = self else {
            return Err(ControlAddrError::Unix(self.to_string()));
        };
        let control = control_port(*port).ok_or(ControlAddrError::NoControlPort(*port))?;
        if host.contains(':') {
            Ok(format!("http://[{host}]:{control}"))
        } else {
            Ok(format!("http://{host}:{control}"))
        }
    }
}

impl From<SocketAddr> for ReplicaAddr {
    fn from(addr: SocketAddr) -> ReplicaAddr {
        ReplicaAddr::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl FromStr for ReplicaAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<ReplicaAddr, AddrParseError> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(AddrParseError::MissingScheme(s.to_owned()));
        };
        match scheme {
            "tcp" => parse_tcp(s, rest),
            "unix" => {
                if !rest.starts_with('/') {
                    return Err(AddrParseError::RelativePath(s.to_owned()));
                }
                Ok(ReplicaAddr::Unix(PathBuf::from(rest)))
            }
            other => Err(AddrParseError::UnknownScheme {
                addr: s.to_owned(),
                scheme: other.to_owned(),
            }),
        }
    }
}

fn parse_tcp(whole: &str, rest: &str) -> Result<ReplicaAddr, AddrParseError> {
    if rest.contains(['/', '?', '#']) {
        return Err(AddrParseError::Trailing(whole.to_owned()));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| AddrParseError::BadHost(whole.to_owned()))?;
        if !host.contains(':') {
            return Err(AddrParseError::BadHost(whole.to_owned()));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| AddrParseError::MissingPort(whole.to_owned()))?;
        (host, port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| AddrParseError::MissingPort(whole.to_owned()))?;
        if host.contains(':') {
            // An IPv6 literal must be bracketed, or the port is ambiguous.
            return Err(AddrParseError::BadHost(whole.to_owned()));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(AddrParseError::BadHost(whole.to_owned()));
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => {
            return Err(AddrParseError::BadPort {
                addr: whole.to_owned(),
                port: port.to_owned(),
            });
        }
    };
    Ok(ReplicaAddr::Tcp {
        host: host.to_owned(),
        port,
    })
}

impl fmt::Display for ReplicaAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaAddr::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            ReplicaAddr::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            ReplicaAddr::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_tcp_and_unix_addresses() {
        for text in [
            "tcp://127.0.0.1:9502",
            "tcp://replica-1.example:1",
            "tcp://[::1]:9502",
            "unix:///run/shorthorn/vol1.sock",
        ] {
            let addr: ReplicaAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "tcp://[::1]:80".parse::<ReplicaAddr>().unwrap(),
            ReplicaAddr::Tcp {
                host: "::1".into(),
                port: 80
            }
        );
        assert_eq!(
            "unix:///tmp/x".parse::<ReplicaAddr>().unwrap(),
            ReplicaAddr::unix("/tmp/x")
        );
        let from_socket = ReplicaAddr::from(SocketAddr::from(([10, 0, 0, 3], 9502)));
        assert_eq!(from_socket.to_string(), "tcp://10.0.0.3:9502");
    }

    #[test]
    fn rejects_malformed_addresses_with_specific_errors() {
        let err = |s: &str| s.parse::<ReplicaAddr>().unwrap_err();
        assert!(matches!(
            err("127.0.0.1:9502"),
            AddrParseError::MissingScheme(_)
        ));
        assert!(matches!(
            err("http://x:1"),
            AddrParseError::UnknownScheme { .. }
        ));
        assert!(matches!(err("tcp://host"), AddrParseError::MissingPort(_)));
        assert!(matches!(
            err("tcp://host:0"),
            AddrParseError::BadPort { .. }
        ));
        assert!(matches!(
            err("tcp://host:65536"),
            AddrParseError::BadPort { .. }
        ));
        assert!(matches!(err("tcp://host:"), AddrParseError::BadPort { .. }));
        assert!(matches!(err("tcp://:9502"), AddrParseError::BadHost(_)));
        assert!(matches!(err("tcp://::1:9502"), AddrParseError::BadHost(_)));
        assert!(matches!(err("tcp://[::1]"), AddrParseError::MissingPort(_)));
        assert!(matches!(err("tcp://[::1:9"), AddrParseError::BadHost(_)));
        assert!(matches!(err("tcp://h:1/x"), AddrParseError::Trailing(_)));
        assert!(matches!(
            err("unix://relative.sock"),
            AddrParseError::RelativePath(_)
        ));
        assert!(matches!(err("unix://"), AddrParseError::RelativePath(_)));
        assert!(err("tcp://host").to_string().contains("tcp://host:port"));
    }

    #[test]
    fn the_control_api_is_on_the_next_port() {
        let tcp: ReplicaAddr = "tcp://10.0.0.2:9502".parse().unwrap();
        assert_eq!(tcp.control_url().unwrap(), "http://10.0.0.2:9503");
        let v6: ReplicaAddr = "tcp://[::1]:9502".parse().unwrap();
        assert_eq!(v6.control_url().unwrap(), "http://[::1]:9503");
        let last: ReplicaAddr = "tcp://h:65535".parse().unwrap();
        assert_eq!(
            last.control_url(),
            Err(ControlAddrError::NoControlPort(65535))
        );
        assert!(matches!(
            ReplicaAddr::unix("/run/r.sock").control_url(),
            Err(ControlAddrError::Unix(_))
        ));
        let data: SocketAddr = "127.0.0.1:9502".parse().unwrap();
        assert_eq!(control_socket_addr(data).unwrap().port(), 9503);
    }
}
