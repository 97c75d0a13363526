//! Security: authorization (Casbin ACL), the TLS material a node or client uses, the gossip
//! cluster key, and (`loghouse certs`) certificate generation.
//!
//! Everything here is plain data or pure functions: files are read once at start-up (by the
//! config or the CLI) and handed over as bytes and strings, so nothing reads a file inside the
//! simulator. TLS exists only in production builds (madsim-tonic ignores it); authorization runs
//! in both, so the simulation exercises it.
//!
//! Who sees what: `security/` parses PEM and certificates; `server/` takes the caller's
//! certificate from the connection and asks [`acl::Authorizer`]; `membership/` only sees the
//! cluster key.

pub mod acl;
#[cfg(not(madsim))]
pub mod certs;
#[cfg(not(madsim))]
pub mod tls;

pub use acl::{AclError, Action, Authorizer, Denied};

/// The subject of a request that carries no client certificate, on a node that does not
/// require one.
pub const ANONYMOUS: &str = "anonymous";

/// Shortest accepted cluster key, in bytes.
pub const GOSSIP_KEY_BYTES_MIN: usize = 16;

/// A node's TLS identity and, for mutual TLS, the CA its callers' certificates must chain to.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// PEM: the node's certificate (chain), used as server identity and, on Raft calls to other
    /// members, as client identity.
    pub cert_pem: Vec<u8>,
    /// PEM: the certificate's private key.
    pub key_pem: Vec<u8>,
    /// PEM: the CA that signs clients' and members' certificates. Set: mutual TLS (a caller
    /// without a certificate is UNAUTHENTICATED, one from another CA fails the handshake), and
    /// the CA members verify each other with.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish()
    }
}

/// What a client (the Rust client, the CLI, or a member calling another member) uses to reach
/// a TLS node: the CA to verify the server with and, for mutual TLS, its own certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM: the CA the server's certificate must chain to (only it is trusted).
    pub ca_pem: Vec<u8>,
    /// PEM certificate and key to present, when the server requires one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// The ACL as text: a Casbin model (`model.conf`) and policy (`policy.csv`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclText {
    pub model: String,
    pub policy: String,
}

impl AclText {
    pub fn authorizer(&self) -> Result<Authorizer, AclError> {
        Authorizer::new(&self.model, &self.policy)
    }
}

/// The shared secret every gossip datagram is authenticated with (HMAC-SHA256).
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(Vec<u8>);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKey(<{} bytes redacted>)", self.0.len())
    }
}

/// Why a cluster key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GossipKeyError {
    #[error("the gossip key must be hex (0-9, a-f), an even number of digits")]
    NotHex,
    #[error("the gossip key has {0} bytes; at least {GOSSIP_KEY_BYTES_MIN} are needed (e.g. `openssl rand -hex 32`)")]
    TooShort(usize),
}

impl GossipKey {
    pub fn new(bytes: Vec<u8>) -> Result<GossipKey, GossipKeyError> {
        if bytes.len() < GOSSIP_KEY_BYTES_MIN {
            return Err(GossipKeyError::TooShort(bytes.len()));
        }
        Ok(GossipKey(bytes))
    }

    /// From hex text (surrounding whitespace ignored, as in a key file).
    pub fn from_hex(text: &str) -> Result<GossipKey, GossipKeyError> {
        let text = text.trim();
        if text.len() % 2 != 0 {
            return Err(GossipKeyError::NotHex);
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or(GossipKeyError::NotHex)?;
        GossipKey::new(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A node's loaded security material (from `[security]`, see `NodeConfig::load_security`).
/// Everything `None` (the default): plaintext, every request allowed, gossip unauthenticated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    pub tls: Option<TlsMaterial>,
    pub acl: Option<AclText>,
    pub gossip_key: Option<GossipKey>,
}

impl Secrets {
    /// What this node presents and trusts when it calls other members (Raft): its own
    /// certificate, verified by the members against the client CA it verifies them with.
    pub fn peer_client_tls(&self) -> Option<ClientTls> {
        let tls = self.tls.as_ref()?;
        Some(ClientTls {
            ca_pem: tls.client_ca_pem.clone()?,
            identity: Some((tls.cert_pem.clone(), tls.key_pem.clone())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_keys_parse_from_hex_and_must_be_long_enough() {
        let key = GossipKey::from_hex(" 00112233445566778899aabbccddeeff\n").unwrap();
        assert_eq!(key.as_bytes().len(), 16);
        assert_eq!(key.as_bytes()[15], 0xff);
        assert_eq!(
            GossipKey::from_hex("0011"),
            Err(GossipKeyError::TooShort(2))
        );
        assert_eq!(GossipKey::from_hex("xyz"), Err(GossipKeyError::NotHex));
        assert_eq!(
            GossipKey::from_hex("zz112233445566778899aabbccddeeff"),
            Err(GossipKeyError::NotHex)
        );
        assert_eq!(GossipKey::from_hex("é0"), Err(GossipKeyError::NotHex));
        assert!(!format!("{key:?}").contains("00112233"));
    }
}
