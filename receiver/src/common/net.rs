//! Listening addresses: `host:port` split the way the collector's Go code
//! splits it, resolved and bound with errors an operator can act on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

/// Splits `host:port` the way Go's `net.SplitHostPort` does: IPv6 hosts in
/// brackets, an empty host meaning every interface. Returns the bare host.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("invalid endpoint {endpoint:?}: {why}");
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    let host = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .ok_or_else(|| bad("missing \"]\" after an IPv6 address"))?
    } else if host.contains(':') {
        return Err(bad("write IPv6 addresses in brackets, as [::1]:4317"));
    } else {
        host
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
    Ok((host.to_string(), port))
}

/// Binds the first address of `endpoint` that can be bound. The error reads
/// `cannot listen on <endpoint>: <reason>`.
pub(crate) async fn bind(endpoint: &str) -> Result<TcpListener, String> {
    let addrs = resolve(endpoint)
        .await
        .map_err(|e| format!("cannot listen on {endpoint}: {e}"))?;
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let why = last.map_or_else(|| "no address".to_string(), |e| io_reason(&e));
    Err(format!("cannot listen on {endpoint}: {why}"))
}

/// Binds a UDP socket on the first address of `endpoint` that can be bound,
/// with a receive buffer of `recv_buffer` bytes (0: the kernel's default).
/// The error reads `cannot listen on <endpoint>: <reason>`.
pub(crate) async fn bind_udp(
    endpoint: &str,
    recv_buffer: usize,
) -> Result<tokio::net::UdpSocket, String> {
    let addrs = resolve(endpoint)
        .await
        .map_err(|e| format!("cannot listen on {endpoint}: {e}"))?;
    let mut last = None;
    for addr in addrs {
        match udp_socket(addr, recv_buffer) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    let why = last.map_or_else(|| "no address".to_string(), |e| io_reason(&e));
    Err(format!("cannot listen on {endpoint}: {why}"))
}

fn udp_socket(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if recv_buffer > 0 {
        socket.set_recv_buffer_size(recv_buffer)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Short reasons for the bind errors an operator meets.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_string(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// Addresses to bind for an endpoint. `localhost` means the IPv4 loopback
/// (the resolver's answer varies between hosts), an empty host every interface.
async fn resolve(endpoint: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = parse_endpoint(endpoint)?;
    if host.is_empty() {
        return Ok(vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        )]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(addrs)
}

/// A bound address for a log line: `127.0.0.1:4317`, or empty before binding.
pub fn shown(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_like_go() {
        assert_eq!(
            parse_endpoint("localhost:4317").unwrap(),
            ("localhost".into(), 4317)
        );
        assert_eq!(
            parse_endpoint("0.0.0.0:4317").unwrap(),
            ("0.0.0.0".into(), 4317)
        );
        assert_eq!(parse_endpoint("[::1]:4317").unwrap(), ("::1".into(), 4317));
        assert_eq!(parse_endpoint(":4317").unwrap(), ("".into(), 4317));
        assert_eq!(
            parse_endpoint("127.0.0.1:0").unwrap(),
            ("127.0.0.1".into(), 0)
        );
        assert!(parse_endpoint("::1:4317").is_err());
        assert!(parse_endpoint("localhost").is_err());
        assert!(parse_endpoint("localhost:http").is_err());
    }

    #[tokio::test]
    async fn bind_names_the_endpoint_in_its_errors() {
        let taken = bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
        assert_eq!(
            bind(&endpoint).await.unwrap_err(),
            format!("cannot listen on {endpoint}: address in use")
        );
        let local = bind("localhost:0").await.unwrap();
        assert_eq!(local.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        assert!(bind("nohost").await.unwrap_err().starts_with(
            "cannot listen on nohost: invalid endpoint \"nohost\": expected host:port"
        ));
    }
}
