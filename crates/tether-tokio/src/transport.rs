//! The socket tasks: one per `main` transport (dial or upgrade, then read and write until
//! it ends), one per UDP socket (read). They talk to the driver through channels only; the
//! machine never leaves the driver task.

use crate::endpoint::{Options, WsEncoding};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether::Link;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, Instrument};

/// What the socket tasks tell the driver.
pub(crate) enum Happening {
    /// A `main` transport is up (dialed, or accepted and upgraded).
    Opened {
        link: Link,
        peer: Option<SocketAddr>,
        writer: Writer,
    },
    /// A dial failed: the machine asked, so it hears `Opened` then `Closed`.
    DialFailed(Link),
    /// Bytes on a transport the driver knows (a stream chunk, one WebSocket message, one
    /// datagram of a client's `feed`).
    Received(Link, Bytes),
    /// One datagram on a server's `feed` socket.
    Datagram(SocketAddr, Bytes),
    /// The transport ended on its own (EOF, error, the peer's close frame).
    Closed(Link),
}

/// The driver's end of a `main` transport.
pub(crate) struct Writer {
    /// Payloads to write, in order. Dropping it closes the transport gracefully.
    pub(crate) tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes handed to `tx` and not yet written.
    pub(crate) unwritten: Arc<AtomicUsize>,
    /// Cuts the transport at once (no flush, no close handshake).
    pub(crate) kill: oneshot::Sender<()>,
}

/// How a `main` transport's stream is framed.
#[derive(Clone)]
pub(crate) enum Framing {
    /// Raw bytes: tether's length-prefixed frames on TCP.
    Stream,
    /// One WebSocket message per payload; `url` is what a client asks for.
    Ws { encoding: WsEncoding, url: String },
}

/// A client's way to a server's `main`.
#[derive(Clone)]
pub(crate) struct DialSpec {
    pub(crate) addr: String,
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub(crate) framing: Framing,
}

/// A server's way to take an accepted stream.
#[derive(Clone)]
pub(crate) struct AcceptSpec {
    pub(crate) tls: Option<Arc<ServerConfig>>,
    pub(crate) framing: Framing,
}

/// Any byte stream a transport can run on (plain TCP or TLS).
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type BoxIo = Box<dyn IoObj>;
trait IoObj: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: Io> IoObj for T {}

/// Dials `spec` for `link` (in a task of its own), then runs the transport.
pub(crate) fn spawn_dial(
    link: Link,
    spec: DialSpec,
    opts: Arc<Options>,
    tx: mpsc::Sender<Happening>,
) {
    let span = tracing::info_span!("transport", link = link.id, to = %spec.addr);
    tokio::spawn(
        async move {
            let dial = tokio::time::timeout(opts.handshake_timeout, dial(&spec));
            match dial.await {
                Ok(Ok((io, peer))) => run(link, Some(peer), io, spec.framing, &opts, tx).await,
                Ok(Err(e)) => {
                    info!(error = %e, "dial failed");
                    let _ = tx.send(Happening::DialFailed(link)).await;
                }
                Err(_) => {
                    info!(timeout = ?opts.handshake_timeout, "dial failed: timed out");
                    let _ = tx.send(Happening::DialFailed(link)).await;
                }
            }
        }
        .instrument(span),
    );
}

/// The stream a dial ends with, before WebSocket framing.
async fn dial(spec: &DialSpec) -> std::io::Result<(Conn, SocketAddr)> {
    let tcp = TcpStream::connect(spec.addr.as_str()).await?;
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr()?;
    let io: BoxIo = match &spec.tls {
        None => Box::new(tcp),
        Some((config, name)) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), tcp)
                .await?;
            Box::new(tls)
        }
    };
    let conn = match &spec.framing {
        Framing::Stream => Conn::Stream(io),
        Framing::Ws { url, .. } => {
            let (ws, _response) = tokio_tungstenite::client_async(url.as_str(), io)
                .await
                .map_err(std::io::Error::other)?;
            Conn::Ws(Box::new(ws))
        }
    };
    Ok((conn, peer))
}

/// Takes an accepted stream for `link`: TLS and WebSocket upgrades (bounded in time), then
/// the transport. A failed upgrade is never reported: the machine never knew the stream.
pub(crate) fn spawn_accepted(
    link: Link,
    tcp: TcpStream,
    peer: SocketAddr,
    spec: AcceptSpec,
    opts: Arc<Options>,
    tx: mpsc::Sender<Happening>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let span = tracing::info_span!("transport", link = link.id, from = %peer);
    tokio::spawn(
        async move {
            let upgrade = tokio::time::timeout(opts.handshake_timeout, upgrade(tcp, &spec));
            let conn = match upgrade.await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return info!(error = %e, "upgrade of an accepted stream failed"),
                Err(_) => return info!("upgrade of an accepted stream timed out"),
            };
            drop(permit);
            run(link, Some(peer), conn, spec.framing, &opts, tx).await
        }
        .instrument(span),
    );
}

async fn upgrade(tcp: TcpStream, spec: &AcceptSpec) -> std::io::Result<Conn> {
    tcp.set_nodelay(true)?;
    let io: BoxIo = match &spec.tls {
        None => Box::new(tcp),
        Some(config) => Box::new(
            tokio_rustls::TlsAcceptor::from(config.clone())
                .accept(tcp)
                .await?,
        ),
    };
    Ok(match spec.framing {
        Framing::Stream => Conn::Stream(io),
        Framing::Ws { .. } => Conn::Ws(Box::new(
            tokio_tungstenite::accept_async(io)
                .await
                .map_err(std::io::Error::other)?,
        )),
    })
}

/// A transport, ready.
enum Conn {
    Stream(BoxIo),
    Ws(Box<WebSocketStream<BoxIo>>),
}

/// Reports the transport open, then reads and writes until it ends, is closed by the
/// driver (graceful: what was queued is written, then FIN / a close frame, and the peer's
/// end is awaited for `close_timeout` at most) or is cut (at once).
async fn run(
    link: Link,
    peer: Option<SocketAddr>,
    conn: Conn,
    framing: Framing,
    opts: &Options,
    tx: mpsc::Sender<Happening>,
) {
    let (wtx, wrx) = mpsc::unbounded_channel();
    let unwritten = Arc::new(AtomicUsize::new(0));
    let (kill, killed) = oneshot::channel();
    let writer = Writer {
        tx: wtx,
        unwritten: unwritten.clone(),
        kill,
    };
    if tx
        .send(Happening::Opened { link, peer, writer })
        .await
        .is_err()
    {
        return; // the driver is gone
    }
    let close_timeout = opts.close_timeout;
    let io = async {
        match conn {
            Conn::Stream(io) => {
                let (r, w) = tokio::io::split(io);
                let reader = read_stream(link, r, tx.clone());
                let writer = write_stream(w, wrx, unwritten);
                both(reader, writer, close_timeout).await
            }
            Conn::Ws(ws) => {
                let encoding = match framing {
                    Framing::Ws { encoding, .. } => encoding,
                    Framing::Stream => WsEncoding::Binary,
                };
                let (sink, stream) = (*ws).split();
                let reader = read_ws(link, stream, tx.clone());
                let writer = write_ws(sink, wrx, unwritten, encoding);
                both(reader, writer, close_timeout).await
            }
        }
    };
    // A dropped kill sender (the driver closed the link gracefully) is no kill.
    let cut = async {
        if killed.await.is_err() {
            std::future::pending::<()>().await
        }
    };
    tokio::select! {
        end = io => debug!(?end, "transport ended"),
        () = cut => debug!("transport cut"),
    }
}

/// Runs a reader and a writer together; once one ends, gives the other `limit` to end.
async fn both(
    reader: impl std::future::Future<Output = &'static str>,
    writer: impl std::future::Future<Output = &'static str>,
    limit: Duration,
) -> &'static str {
    tokio::pin!(reader, writer);
    tokio::select! {
        why = &mut reader => {
            let _ = tokio::time::timeout(limit, writer).await;
            why
        }
        why = &mut writer => {
            let _ = tokio::time::timeout(limit, reader).await;
            why
        }
    }
}

async fn read_stream(
    link: Link,
    mut r: tokio::io::ReadHalf<BoxIo>,
    tx: mpsc::Sender<Happening>,
) -> &'static str {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let why = loop {
        if buf.capacity() < 4096 {
            buf.reserve(16 * 1024);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => break "eof",
            Err(_) => break "read error",
            Ok(_) => {
                // Frozen, not copied: the machine slices its frames out of the chunk.
                if tx
                    .send(Happening::Received(link, buf.split().freeze()))
                    .await
                    .is_err()
                {
                    return "driver gone";
                }
            }
        }
    };
    let _ = tx.send(Happening::Closed(link)).await;
    why
}

/// Writes payloads as they come (what is queued at once goes out in one write); when the
/// driver drops its end, shuts the write side down (FIN, or TLS close_notify then FIN).
async fn write_stream(
    mut w: tokio::io::WriteHalf<BoxIo>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    unwritten: Arc<AtomicUsize>,
) -> &'static str {
    let mut gathered = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut len = first.len();
        let result = match rx.try_recv() {
            Err(_) => w.write_all(&first).await,
            Ok(second) => {
                gathered.clear();
                gathered.extend_from_slice(&first);
                gathered.extend_from_slice(&second);
                len += second.len();
                while gathered.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => {
                            len += more.len();
                            gathered.extend_from_slice(&more);
                        }
                        Err(_) => break,
                    }
                }
                w.write_all(&gathered).await
            }
        };
        unwritten.fetch_sub(len, Ordering::Relaxed);
        if result.is_err() {
            return "write error";
        }
    }
    let _ = w.shutdown().await;
    "closed by the machine"
}

async fn read_ws(
    link: Link,
    mut stream: futures_util::stream::SplitStream<WebSocketStream<BoxIo>>,
    tx: mpsc::Sender<Happening>,
) -> &'static str {
    let why = loop {
        let bytes = match stream.next().await {
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(WsMessage::Text(t))) => Bytes::from(t),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
            Some(Ok(WsMessage::Close(frame))) => {
                debug!(?frame, "the peer sent a close frame");
                let _ = tx.send(Happening::Closed(link)).await;
                // Keep reading: tungstenite answers the close frame (and flushes the answer)
                // while it is read from, and the stream ends after.
                while let Some(Ok(_)) = stream.next().await {}
                return "close frame";
            }
            Some(Err(_)) => break "read error",
            None => break "eof",
        };
        if tx.send(Happening::Received(link, bytes)).await.is_err() {
            return "driver gone";
        }
    };
    let _ = tx.send(Happening::Closed(link)).await;
    why
}

/// Sends one message per payload (what is queued at once goes out in one flush); when the
/// driver drops its end, sends a close frame (1000), or, if the peer closed first, flushes
/// the answer to its close frame.
async fn write_ws(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<BoxIo>, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    unwritten: Arc<AtomicUsize>,
    encoding: WsEncoding,
) -> &'static str {
    let message = |payload: Bytes| match encoding {
        WsEncoding::Binary => WsMessage::Binary(payload),
        WsEncoding::Text => match Utf8Bytes::try_from(payload.clone()) {
            Ok(text) => WsMessage::Text(text),
            // Not UTF-8 (never from dop's encoding): sent as binary rather than mangled.
            Err(_) => WsMessage::Binary(payload),
        },
    };
    while let Some(first) = rx.recv().await {
        let mut len = first.len();
        if sink.feed(message(first)).await.is_err() {
            return "write error";
        }
        while let Ok(more) = rx.try_recv() {
            len += more.len();
            if sink.feed(message(more)).await.is_err() {
                return "write error";
            }
        }
        let flushed = sink.flush().await;
        unwritten.fetch_sub(len, Ordering::Relaxed);
        if flushed.is_err() {
            return "write error";
        }
    }
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(WsMessage::Close(Some(frame))).await;
    let _ = sink.close().await;
    "closed by the machine"
}

/// Reads a UDP socket: each datagram one [`Happening`] (`Received` on a client's link,
/// `Datagram` with its source on a server's shared socket).
pub(crate) fn spawn_udp_reader(
    sock: Arc<UdpSocket>,
    link: Option<Link>,
    tx: mpsc::Sender<Happening>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, addr)) => {
                    let bytes = Bytes::copy_from_slice(&buf[..n]);
                    let h = match link {
                        Some(l) => Happening::Received(l, bytes),
                        None => Happening::Datagram(addr, bytes),
                    };
                    if tx.send(h).await.is_err() {
                        return;
                    }
                }
                // ICMP errors (port unreachable) surface here on UDP: nothing to do.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .abort_handle()
}
