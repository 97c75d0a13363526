//! TLS for the gRPC port (production builds only): checking PEM material at start-up, the
//! tonic server and client configurations, and the subject (CN) of a client certificate.

use rustls::crypto::ring::default_provider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::{ClientTls, TlsMaterial};

/// Why TLS material is unusable. `what` names the setting (e.g. `security.tls_cert`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate in it")]
    NoCertificate { what: String },
    #[error("{what}: unreadable PEM certificate: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("{what}: no usable PEM private key in it: {reason}")]
    BadKey { what: String, reason: String },
    #[error("{what}: the private key does not match the certificate: {reason}")]
    KeyMismatch { what: String, reason: String },
}

/// Parses every certificate in `pem`; at least one.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert).map_err(|e| TlsError::BadCertificate {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// Checks that `cert_pem` holds certificates, `key_pem` a private key, and that they match.
pub fn check_identity(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<(), TlsError> {
    let certs = certificates(cert_pem, what)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, &default_provider()).map_err(|e| TlsError::KeyMismatch {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(())
}

impl TlsMaterial {
    /// Checks the node's certificate, key and client CA (start-up; names the settings).
    pub fn check(&self) -> Result<(), TlsError> {
        check_identity(&self.cert_pem, &self.key_pem, "security.tls_cert/tls_key")?;
        if let Some(ca) = &self.client_ca_pem {
            certificates(ca, "security.tls_client_ca")?;
        }
        Ok(())
    }

    /// The server side: the node's identity and, with a client CA, mutual TLS. Client
    /// certificates are optional at the handshake so a caller without one gets a gRPC
    /// UNAUTHENTICATED from the service (see `server::auth`) rather than a bare reset; a
    /// certificate that does not chain to the CA still fails the handshake.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config =
            ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            Some(ca) => config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true),
            None => config,
        }
    }

    /// Whether callers must present a certificate (mutual TLS).
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca_pem.is_some()
    }
}

impl ClientTls {
    /// Checks the CA and the identity, if any.
    pub fn check(&self) -> Result<(), TlsError> {
        certificates(&self.ca_pem, "the CA certificate (--ca-cert)")?;
        if let Some((cert, key)) = &self.identity {
            check_identity(cert, key, "the client certificate/key (--cert/--key)")?;
        }
        Ok(())
    }

    /// tonic's client configuration: only `ca_pem` is trusted (no system roots).
    pub fn client_config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

/// The subject common name (CN) of a DER certificate; `None` if it has none or does not parse.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
