//! The caller's side of connection startup: TLS negotiation, the StartupMessage, and asking
//! for the password that carries the token.

use crate::error::Refusal;
use crate::frame::{self, Reader, codes};
use crate::stream::MaybeTls;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first byte of a TLS ClientHello, sent by clients using `sslnegotiation=direct`.
const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// The largest PasswordMessage accepted (tokens are a few hundred bytes to a few KB).
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;

/// What a new connection asked for.
pub enum Opening {
    /// A session: the stream (possibly TLS) and the startup parameters.
    Session(ClientStartup),
    /// A CancelRequest for a gateway-issued key.
    Cancel {
        /// The process id from the client's BackendKeyData.
        pid: i32,
        /// The secret from the client's BackendKeyData.
        secret: i32,
    },
}

/// A client that has sent its StartupMessage.
pub struct ClientStartup {
    /// The connection, TLS or not.
    pub stream: MaybeTls,
    /// Bytes already read past the StartupMessage.
    pub buf: BytesMut,
    /// Startup parameters in the order sent.
    pub params: Vec<(String, String)>,
    /// The protocol minor version the client asked for.
    pub minor_version: i32,
}

impl ClientStartup {
    /// The value of startup parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sends AuthenticationCleartextPassword and reads the token from the PasswordMessage.
    ///
    /// Returns `Ok(None)` when the client hangs up instead of answering, which is how psql
    /// asks its user for a password.
    pub async fn read_password(&mut self) -> Result<Option<String>, Refusal> {
        let mut out = BytesMut::with_capacity(9);
        frame::auth_request(&mut out, 3);
        self.write(&out).await?;
        let frame = loop {
            if let Some(frame) = frame::split_frame(&mut self.buf, MAX_PASSWORD_MESSAGE)? {
                break frame;
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        };
        if frame[0] != b'p' {
            return Err(Refusal::Protocol(format!(
                "expected a password message, got {:?}",
                frame[0] as char
            )));
        }
        let mut r = Reader::new(frame::body(&frame), "PasswordMessage");
        Ok(Some(r.cstr()?.to_owned()))
    }

    /// Writes and flushes `bytes` to the client.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| Refusal::Protocol(format!("client write failed: {e}")))?;
        self.stream
            .flush()
            .await
            .map_err(|e| Refusal::Protocol(format!("client write failed: {e}")))
    }
}

/// Reads startup packets until the client asks for a session or a cancel, negotiating TLS
/// (SSLRequest or direct) and declining GSS encryption on the way.
pub async fn negotiate(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Opening, (Option<MaybeTls>, Refusal)> {
    let mut stream = MaybeTls::Plain(tcp);
    if let (Some(config), MaybeTls::Plain(tcp)) = (&tls, &stream) {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await.ok() == Some(1) && first[0] == TLS_HANDSHAKE_BYTE {
            stream = match upgrade(stream, config.clone()).await {
                Ok(s) => s,
                Err(e) => return Err((None, e)),
            };
        }
    }
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let packet = match read_startup_packet(&mut stream, &mut buf).await {
            Ok(p) => p,
            Err(e) => return Err((Some(stream), e)),
        };
        let code = frame::i32_at(&packet, 0);
        match code {
            codes::SSL_REQUEST | codes::GSSENC_REQUEST => {
                if !buf.is_empty() {
                    // Bytes sent before the handshake would be processed as if encrypted.
                    return Err((
                        Some(stream),
                        Refusal::Protocol("unencrypted data after SSL/GSS request".into()),
                    ));
                }
                let accept = code == codes::SSL_REQUEST && !stream.is_tls() && tls.is_some();
                if let Err(e) = stream.write_all(if accept { b"S" } else { b"N" }).await {
                    return Err((None, Refusal::Protocol(format!("client write failed: {e}"))));
                }
                if accept {
                    let config = tls.clone().expect("checked above");
                    stream = match upgrade(stream, config).await {
                        Ok(s) => s,
                        Err(e) => return Err((None, e)),
                    };
                }
            }
            codes::CANCEL_REQUEST => {
                let mut r = Reader::new(&packet[4..], "CancelRequest");
                return match (r.i32(), r.i32()) {
                    (Ok(pid), Ok(secret)) => Ok(Opening::Cancel { pid, secret }),
                    _ => Err((
                        Some(stream),
                        Refusal::Protocol("malformed CancelRequest".into()),
                    )),
                };
            }
            code if code >> 16 == 3 => {
                return match parse_params(&packet[4..]) {
                    Ok(params) => Ok(Opening::Session(ClientStartup {
                        stream,
                        buf,
                        params,
                        minor_version: code & 0xffff,
                    })),
                    Err(e) => Err((Some(stream), e)),
                };
            }
            code => {
                let refusal = Refusal::Unsupported(format!(
                    "unsupported frontend protocol {}.{}: the gateway supports 3.0",
                    code >> 16,
                    code & 0xffff
                ));
                return Err((Some(stream), refusal));
            }
        }
    }
}

async fn upgrade(stream: MaybeTls, config: Arc<rustls::ServerConfig>) -> Result<MaybeTls, Refusal> {
    let MaybeTls::Plain(tcp) = stream else {
        return Err(Refusal::Protocol("TLS requested twice".into()));
    };
    tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map(|s| MaybeTls::ServerTls(Box::new(s)))
        .map_err(|e| Refusal::Protocol(format!("TLS handshake failed: {e}")))
}

/// Reads one untagged packet, returning its body (without the length).
async fn read_startup_packet(
    stream: &mut MaybeTls,
    buf: &mut BytesMut,
) -> Result<BytesMut, Refusal> {
    let eof = || Refusal::Protocol("the client closed the connection during startup".into());
    while buf.len() < 4 {
        if stream.read_buf(buf).await.map_err(|_| eof())? == 0 {
            return Err(eof());
        }
    }
    let len = frame::i32_at(buf, 0);
    if len < 8 || len as usize > frame::MAX_STARTUP_LEN {
        return Err(Refusal::Protocol(format!(
            "invalid startup packet length {len}"
        )));
    }
    let len = len as usize;
    while buf.len() < len {
        if stream.read_buf(buf).await.map_err(|_| eof())? == 0 {
            return Err(eof());
        }
    }
    let mut packet = buf.split_to(len);
    let _ = packet.split_to(4);
    Ok(packet)
}

fn parse_params(body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let mut r = Reader::new(body, "StartupMessage");
    let mut params = Vec::new();
    loop {
        let key = r.cstr()?;
        if key.is_empty() {
            break;
        }
        params.push((key.to_owned(), r.cstr()?.to_owned()));
    }
    if !r.is_empty() {
        return Err(Refusal::Protocol(
            "trailing bytes after startup parameters".into(),
        ));
    }
    if !params.iter().any(|(k, _)| k == "user") {
        return Err(Refusal::Protocol(
            "no user name in the startup packet".into(),
        ));
    }
    Ok(params)
}

/// Appends a NegotiateProtocolVersion when the client asked for a newer minor version or for
/// protocol options (`_pq_.*`) the gateway does not implement.
pub fn negotiation_reply(startup: &ClientStartup, out: &mut BytesMut) {
    let unknown: Vec<&str> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    if startup.minor_version > 0 || !unknown.is_empty() {
        frame::negotiate_protocol_version(out, 0, &unknown);
    }
}
