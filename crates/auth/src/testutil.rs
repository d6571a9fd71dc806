//! Test helpers: provider keys of each accepted family, token minting, and a tiny JWKS server.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "postern-gateway";

/// An identity provider's signing key with its public JWK.
pub struct ProviderKey {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Jwk,
}

impl ProviderKey {
    /// A fresh key for `alg` (RS256, ES256 or EdDSA), generated with real crypto.
    pub fn generate(alg: Algorithm, kid: &str) -> ProviderKey {
        let pair = match alg {
            Algorithm::RS256 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            Algorithm::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Algorithm::EdDSA => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
            other => panic!("no test key for {other:?}"),
        }
        .unwrap();
        let pem = pair.serialize_pem();
        let (encoding, mut jwk) = match alg {
            Algorithm::RS256 => {
                let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
                let jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
                (encoding, jwk)
            }
            Algorithm::ES256 => {
                let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
                let jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
                (encoding, jwk)
            }
            // jsonwebtoken derives Ed25519 JWKs only from PKCS#8 v1; aws-lc writes v2.
            _ => {
                let x = URL_SAFE_NO_PAD.encode(pair.public_key_raw());
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"});
                let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
                (encoding, serde_json::from_value(jwk).unwrap())
            }
        };
        jwk.common.key_id = Some(kid.into());
        ProviderKey {
            alg,
            kid: kid.into(),
            encoding,
            jwk,
        }
    }

    /// Sign `claims`, naming this key's `kid` in the header when `with_kid`.
    pub fn sign(&self, claims: &Value, with_kid: bool) -> String {
        let mut header = Header::new(self.alg);
        if with_kid {
            header.kid = Some(self.kid.clone());
        }
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Typical provider claims, valid for an hour.
pub fn claims(sub: &str) -> Value {
    let now = crate::gateway::now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "groups": ["eng", "dba"],
        "iat": now, "nbf": now, "exp": now + 3600,
    })
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[&ProviderKey]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    })
    .unwrap()
}

/// A one-route HTTP server returning `body` (changeable) and counting requests.
pub struct JwksServer {
    pub url: String,
    pub body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    // Read the request head; these requests have no body.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = b.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        JwksServer { url, body, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn serve(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }
}
