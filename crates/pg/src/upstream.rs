//! The gateway's own connection to a target: TCP, optional TLS, startup and authentication
//! with the credentials the gateway holds (trust, cleartext, md5, SCRAM-SHA-256).

use crate::frame::{self, ErrorFields, Reader, codes};
use crate::stream::MaybeTls;
use crate::target::{PgTarget, UpstreamTlsMode};
use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest message accepted from a target during startup.
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

/// What went wrong reaching a target. Messages never include the gateway's password.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect, read or write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// TLS was required but refused, or the handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the gateway's credentials or startup.
    #[error("the server said: {message} (SQLSTATE {code})")]
    Server {
        /// The server's SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server asked for an authentication method the gateway cannot do.
    #[error("unsupported authentication: {0}")]
    Auth(String),
    /// The server broke the protocol.
    #[error("protocol error from the server: {0}")]
    Protocol(String),
}

impl From<frame::FrameError> for UpstreamError {
    fn from(e: frame::FrameError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// An authenticated connection to a target, ready for queries.
pub struct Upstream {
    /// The connection.
    pub stream: MaybeTls,
    /// The server's ParameterStatus (`S`) frames, as received, to pass to the client.
    pub parameter_frames: Vec<Bytes>,
    /// The server's backend process id and secret key, for cancel requests.
    pub backend_key: (i32, i32),
    /// The server's first ReadyForQuery (`Z`) frame.
    pub ready: Bytes,
    /// Bytes read past the ReadyForQuery (normally empty).
    pub leftover: BytesMut,
}

/// Opens TCP to the target and negotiates TLS according to its mode.
pub async fn open(target: &PgTarget) -> Result<MaybeTls, UpstreamError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = target.tls.clone() else {
        return Ok(MaybeTls::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut request = BytesMut::new();
    frame::startup_packet(&mut request, |b| b.put_i32(codes::SSL_REQUEST));
    tcp.write_all(&request).await?;
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {}
        b'N' if target.tls_mode == UpstreamTlsMode::Prefer => return Ok(MaybeTls::Plain(tcp)),
        b'N' => return Err(UpstreamError::Tls("the server does not accept TLS".into())),
        other => {
            return Err(UpstreamError::Protocol(format!(
                "unexpected answer {other:#x} to SSLRequest"
            )));
        }
    }
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| UpstreamError::Tls(format!("invalid server name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| UpstreamError::Tls(e.to_string()))?;
    Ok(MaybeTls::ClientTls(Box::new(stream)))
}

/// Connects, sends the startup message with `params`, and authenticates as the target's user.
pub async fn connect(
    target: &PgTarget,
    params: &[(&str, &str)],
) -> Result<Upstream, UpstreamError> {
    let mut stream = open(target).await?;
    let mut out = BytesMut::with_capacity(256);
    frame::startup_packet(&mut out, |b| {
        b.put_i32(codes::PROTOCOL_3);
        frame::put_cstr(b, "user");
        frame::put_cstr(b, &target.user);
        frame::put_cstr(b, "database");
        frame::put_cstr(b, &target.database);
        for (k, v) in target
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(params.iter().copied())
        {
            frame::put_cstr(b, k);
            frame::put_cstr(b, v);
        }
        b.put_u8(0);
    });
    stream.write_all(&out).await?;
    stream.flush().await?;

    let mut conn = Handshake {
        stream,
        buf: BytesMut::with_capacity(4096),
        scram: None,
    };
    let mut parameter_frames = Vec::new();
    let mut backend_key = (0, 0);
    loop {
        let msg = conn.next().await?;
        match msg[0] {
            b'R' => conn.authenticate(target, &msg).await?,
            b'S' => parameter_frames.push(msg),
            b'K' => {
                let mut r = Reader::new(frame::body(&msg), "BackendKeyData");
                backend_key = (r.i32()?, r.i32()?);
            }
            b'N' => {}
            b'E' => {
                let f = ErrorFields::decode(frame::body(&msg))?;
                return Err(UpstreamError::Server {
                    code: f.code,
                    message: f.message,
                });
            }
            b'Z' => {
                return Ok(Upstream {
                    stream: conn.stream,
                    parameter_frames,
                    backend_key,
                    ready: msg,
                    leftover: conn.buf,
                });
            }
            b'v' => {}
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message {:?} during startup",
                    other as char
                )));
            }
        }
    }
}

/// Sends a CancelRequest for the upstream backend `(pid, secret)`.
pub async fn cancel(target: &PgTarget, key: (i32, i32)) -> Result<(), UpstreamError> {
    let mut stream = open(target).await?;
    stream
        .write_all(&frame::cancel_packet(key.0, key.1))
        .await?;
    stream.flush().await?;
    // The server closes the connection when it has processed the request.
    let mut sink = [0u8; 64];
    let _ = stream.read(&mut sink).await;
    Ok(())
}

struct Handshake {
    stream: MaybeTls,
    buf: BytesMut,
    scram: Option<sasl::ScramSha256>,
}

impl Handshake {
    async fn next(&mut self) -> Result<Bytes, UpstreamError> {
        loop {
            if let Some(msg) = frame::split_frame(&mut self.buf, MAX_STARTUP_MESSAGE)? {
                return Ok(msg);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(UpstreamError::Protocol(
                    "the server closed the connection during startup".into(),
                ));
            }
        }
    }

    async fn send(&mut self, tag: u8, body: &[u8]) -> Result<(), UpstreamError> {
        let mut out = BytesMut::with_capacity(body.len() + 5);
        let at = frame::begin(&mut out, tag);
        out.put_slice(body);
        frame::finish(&mut out, at);
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    fn password<'a>(&self, target: &'a PgTarget) -> Result<&'a str, UpstreamError> {
        target.password.as_ref().map(|p| p.expose()).ok_or_else(|| {
            UpstreamError::Auth(
                "the server asked for a password and the target has none configured".into(),
            )
        })
    }

    async fn authenticate(&mut self, target: &PgTarget, msg: &[u8]) -> Result<(), UpstreamError> {
        let mut r = Reader::new(frame::body(msg), "Authentication");
        match r.i32()? {
            0 => Ok(()),
            3 => {
                let mut body = self.password(target)?.as_bytes().to_vec();
                body.push(0);
                self.send(b'p', &body).await
            }
            5 => {
                let salt: [u8; 4] = r.bytes(4)?.try_into().expect("4 bytes");
                let hash = md5_hash(
                    target.user.as_bytes(),
                    self.password(target)?.as_bytes(),
                    salt,
                );
                let mut body = hash.into_bytes();
                body.push(0);
                self.send(b'p', &body).await
            }
            10 => {
                let mut offered = Vec::new();
                loop {
                    let m = r.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    offered.push(m);
                }
                if !offered.contains(&"SCRAM-SHA-256") {
                    return Err(UpstreamError::Auth(format!("SASL mechanisms {offered:?}")));
                }
                let scram = sasl::ScramSha256::new(
                    self.password(target)?.as_bytes(),
                    sasl::ChannelBinding::unsupported(),
                );
                let mut body = BytesMut::new();
                frame::put_cstr(&mut body, "SCRAM-SHA-256");
                body.put_i32(scram.message().len() as i32);
                body.put_slice(scram.message());
                self.scram = Some(scram);
                self.send(b'p', &body).await
            }
            11 => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASLContinue without SASL".into()))?;
                scram
                    .update(r.rest())
                    .map_err(|e| UpstreamError::Auth(format!("SCRAM: {e}")))?;
                let reply = scram.message().to_vec();
                self.send(b'p', &reply).await
            }
            12 => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASLFinal without SASL".into()))?;
                scram
                    .finish(r.rest())
                    .map_err(|e| UpstreamError::Auth(format!("SCRAM server signature: {e}")))
            }
            other => Err(UpstreamError::Auth(format!(
                "authentication method {other}"
            ))),
        }
    }
}
