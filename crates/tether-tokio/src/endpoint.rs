//! Where a machine's transports come from: a [`Client`] dials, a [`Server`] accepts; and
//! the driver's [`Options`].

use crate::transport::{AcceptSpec, DialSpec, Framing};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};

/// What a WebSocket message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WsEncoding {
    /// Binary messages: tether's own encoding (its length-prefixed frames; each transmit
    /// one message). The default.
    #[default]
    Binary,
    /// Text messages: dop's encoding (each token and application message one text
    /// message), for a token-merge machine configured with `Encoding::Dop`.
    Text,
}

/// A client's transports: it dials `main` (and binds `feed`) whenever its machine emits
/// `Output::Open`, and never by itself: the machine's own backoff decides when.
///
/// ```
/// use tether_tokio::{Client, WsEncoding};
/// // TCP to a server's `main`; UDP to its `feed` (the dual-channel profile).
/// let dual = Client::tcp("127.0.0.1:7000").feed("127.0.0.1:7001".parse().unwrap());
/// // A WebSocket (tether's binary encoding).
/// let ws = Client::ws("ws://127.0.0.1:7002/tether", WsEncoding::Binary);
/// # let _ = (dual, ws);
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) dial: DialSpec,
    pub(crate) feed: Option<SocketAddr>,
}

impl Client {
    /// TCP `main` to `addr` (`"host:port"` or a `SocketAddr`; a host name is resolved at
    /// every dial), tether's binary frames on it. No `feed` until [`Client::feed`].
    pub fn tcp(addr: impl ToString) -> Client {
        Client {
            dial: DialSpec {
                addr: addr.to_string(),
                tls: None,
                framing: Framing::Stream,
            },
            feed: None,
        }
    }

    /// A WebSocket `main` at `url` (`ws://host:port/path`; for `wss://` add
    /// [`Client::tls`]), one message per transmit in `encoding`.
    ///
    /// The adapter dials `host:port` of the URL itself (port 80, or 443 for `wss`, when
    /// the URL has none) and runs the WebSocket handshake over that stream.
    pub fn ws(url: impl Into<String>, encoding: WsEncoding) -> Client {
        let url = url.into();
        Client {
            dial: DialSpec {
                addr: host_port(&url),
                tls: None,
                framing: Framing::Ws { encoding, url },
            },
            feed: None,
        }
    }

    /// TLS on `main` (under the WebSocket, for `wss`), with the caller's `rustls` client
    /// configuration (its roots, its ALPN) and the name the server's certificate must
    /// carry. Default: no TLS.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tether_tokio::rustls::{ClientConfig, RootCertStore};
    /// use tether_tokio::Client;
    /// let roots = RootCertStore::empty(); // add the server's CA here
    /// let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    /// let client = Client::tcp("example.org:7000").tls(Arc::new(config), "example.org".try_into().unwrap());
    /// # let _ = client;
    /// ```
    pub fn tls(mut self, config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Client {
        self.dial.tls = Some((config, server_name));
        self
    }

    /// UDP `feed` to `addr` (the dual-channel profile): on `Output::Open(Feed)` the client
    /// binds a UDP socket on an ephemeral port and connects it there. Default: none (a
    /// machine that asks for `feed` then hears `Opened` and `Closed`, as for a failed
    /// dial).
    pub fn feed(mut self, addr: SocketAddr) -> Client {
        self.feed = Some(addr);
        self
    }
}

/// `host:port` of a WebSocket URL (the default port of its scheme when it has none).
fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_string()
    } else if scheme.eq_ignore_ascii_case("wss") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    }
}

/// A server's transports: it accepts `main` streams on a listener (each a fresh
/// `Link::main(id)` and `Input::Opened` once its TLS and WebSocket upgrades are done) and,
/// for the dual-channel profile, reads one UDP `feed` socket.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use tether_tokio::{Server, WsEncoding};
/// use tokio::net::{TcpListener, UdpSocket};
/// let tcp = Server::tcp(TcpListener::bind("0.0.0.0:7000").await?)
///     .feed(UdpSocket::bind("0.0.0.0:7001").await?);
/// let ws = Server::ws(TcpListener::bind("0.0.0.0:7002").await?, WsEncoding::Binary);
/// # let _ = (tcp, ws); Ok(()) }
/// ```
pub struct Server {
    pub(crate) listener: TcpListener,
    pub(crate) accept: AcceptSpec,
    pub(crate) feed: Option<UdpSocket>,
    pub(crate) max_feed_peers: usize,
    pub(crate) feed_idle: Duration,
    pub(crate) max_upgrades: usize,
}

impl Server {
    /// Accepts TCP `main` streams on `listener`, tether's binary frames on them.
    pub fn tcp(listener: TcpListener) -> Server {
        Server::with_framing(listener, Framing::Stream)
    }

    /// Accepts WebSocket `main` transports on `listener` (any path), one message per
    /// transmit in `encoding`.
    pub fn ws(listener: TcpListener, encoding: WsEncoding) -> Server {
        Server::with_framing(
            listener,
            Framing::Ws {
                encoding,
                url: String::new(),
            },
        )
    }

    fn with_framing(listener: TcpListener, framing: Framing) -> Server {
        Server {
            listener,
            accept: AcceptSpec { tls: None, framing },
            feed: None,
            max_feed_peers: 4096,
            feed_idle: Duration::from_secs(60),
            max_upgrades: 256,
        }
    }

    /// TLS on every accepted stream (under the WebSocket, for `wss`), with the caller's
    /// `rustls` server configuration (certificate, key, ALPN). Default: no TLS.
    pub fn tls(mut self, config: Arc<ServerConfig>) -> Server {
        self.accept.tls = Some(config);
        self
    }

    /// The UDP `feed` socket (the dual-channel profile). Each source address gets a
    /// `Link::feed(id)` of its own at its first datagram. Default: none (datagrams are
    /// never read).
    pub fn feed(mut self, socket: UdpSocket) -> Server {
        self.feed = Some(socket);
        self
    }

    /// The most source addresses mapped to `feed` links at once. Default: 4,096.
    ///
    /// A mapping goes when the machine closes its link (`Output::Close`, as the
    /// dual-channel server does for a refused or lost `feed`). When the map is full, a
    /// datagram from a new address evicts the address heard from least recently if that
    /// one has been silent for [`Server::feed_idle`] (the machine is told `Closed` for its
    /// link); otherwise the datagram is dropped (and traced at debug level), so spoofed
    /// sources can never grow the map, nor push out a live `feed`.
    pub fn max_feed_peers(mut self, max: usize) -> Server {
        self.max_feed_peers = max.max(1);
        self
    }

    /// How long a mapped `feed` address must have been silent before a new address may
    /// take its place in a full map ([`Server::max_feed_peers`]). Default: 60 s (a bound
    /// `feed` of the dual-channel profile hears a keepalive every second).
    pub fn feed_idle(mut self, idle: Duration) -> Server {
        self.feed_idle = idle;
        self
    }

    /// The most accepted streams in their TLS or WebSocket upgrade at once; past it, new
    /// streams are closed as they are accepted. Each upgrade is also bounded in time by
    /// [`Options::handshake_timeout`]. Default: 256. (Plain TCP has no upgrade: it is
    /// handed to the machine at once, which bounds its links itself.)
    pub fn max_upgrades(mut self, max: usize) -> Server {
        self.max_upgrades = max.max(1);
        self
    }

    /// The listener's address (for a listener bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Where a machine's transports come from: see [`Client`] and [`Server`] (both convert
/// into it).
pub enum Endpoint {
    /// Dials.
    Client(Client),
    /// Accepts.
    Server(Server),
}

impl From<Client> for Endpoint {
    fn from(c: Client) -> Self {
        Endpoint::Client(c)
    }
}

impl From<Server> for Endpoint {
    fn from(s: Server) -> Self {
        Endpoint::Server(s)
    }
}

/// The driver's settings. `Options::default()` gives the values written on each field.
///
/// ```
/// use std::time::Duration;
/// let options = tether_tokio::Options {
///     name: "game-client".into(),
///     close_timeout: Duration::from_secs(1),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// The name in the driver's tracing span. Default: `"tether"`.
    pub name: String,
    /// Events buffered for the application (the [`Events`](crate::Events) channel).
    /// Default: 1,024. When it is full the driver waits for the application to read:
    /// back-pressure, the machine and its sockets pause (the peer's TCP window fills).
    pub events_capacity: usize,
    /// Commands and other requests buffered from the [`Handle`](crate::Handle)s. Default:
    /// 1,024. When it is full `Handle::command` waits and `Handle::try_command` fails.
    pub commands_capacity: usize,
    /// Socket happenings buffered for the driver (reads of every transport share it).
    /// Default: 1,024. When it is full the socket tasks wait (TCP back-pressure).
    pub inputs_capacity: usize,
    /// Bytes the machine may have transmitted on one `main` transport that its socket has
    /// not written yet. Default: 8 MiB. Past it the peer is not reading: the transport
    /// is cut (the machine is told `Closed`, as for a network loss, and resumes) rather
    /// than let the buffer grow.
    pub max_unwritten: usize,
    /// How long a dial (TCP connect, TLS and WebSocket handshakes) or an accepted
    /// stream's upgrade may take. Default: 10 s.
    pub handshake_timeout: Duration,
    /// How long a closing transport waits for its peer's end (a WebSocket's close frame,
    /// the peer's FIN) after its own. Default: 2 s.
    pub close_timeout: Duration,
    /// Time zero of tether's clock for this machine (`tether::Instant::ZERO`): give the
    /// same instant to machines that must share a clock. Default: when
    /// [`spawn`](crate::spawn) is called (so create the machine with `Instant::ZERO`).
    pub start: Option<tokio::time::Instant>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "tether".into(),
            events_capacity: 1024,
            commands_capacity: 1024,
            inputs_capacity: 1024,
            max_unwritten: 8 << 20,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            start: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(host_port("ws://127.0.0.1:9000/x"), "127.0.0.1:9000");
        assert_eq!(host_port("wss://example.org/x?y"), "example.org:443");
        assert_eq!(host_port("ws://example.org"), "example.org:80");
        assert_eq!(host_port("ws://[::1]:9/"), "[::1]:9");
        assert_eq!(host_port("ws://[::1]/"), "[::1]:80");
    }
}
