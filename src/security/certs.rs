//! `loghouse certs`: a CA, one certificate per node (server and client use: members call each
//! other), client certificates, a cluster gossip key and a matching ACL, for a local secure
//! cluster. For production, use your own PKI: any PEM CA, certificates and keys work.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A certificate authority that can issue node and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Ca, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(Ca { issuer, key_pem })
    }

    pub fn pem(&self) -> Pem {
        Pem {
            cert: self.issuer.pem(),
            key: self.key_pem.clone(),
        }
    }

    /// A certificate with common name `cn` (the ACL subject) for both server and client use,
    /// valid for the DNS names and IP addresses in `sans`.
    pub fn issue(&self, cn: &str, sans: &[String]) -> Result<Pem, CertError> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// What `loghouse certs` makes.
#[derive(Debug, Clone)]
pub struct CertsSpec {
    pub dir: PathBuf,
    /// Node certificates `node-1` .. `node-N` (CN = file name).
    pub nodes: u16,
    /// Client certificates (CN = the name).
    pub clients: Vec<String>,
    /// Subject alternative names of the node certificates (host names and IPs clients and
    /// members use to reach the nodes).
    pub hosts: Vec<String>,
}

/// Writes `ca.pem`, `ca-key.pem`, `node-I.pem`/`node-I-key.pem`, `NAME.pem`/`NAME-key.pem` per
/// client, `gossip.key` (32 random bytes, hex) and `acl/model.conf` + `acl/policy.csv` (the
/// first client may produce, consume and administer; nodes may talk Raft). Returns the files.
pub fn write_cluster_certs(spec: &CertsSpec) -> Result<Vec<PathBuf>, CertError> {
    for name in &spec.clients {
        check_name(name)?;
    }
    let mut written = Vec::new();
    let mut write = |name: &str, text: &str, secret: bool| -> Result<(), CertError> {
        let path = spec.dir.join(name);
        write_file(&path, text, secret)?;
        written.push(path);
        Ok(())
    };
    let ca = Ca::new("loghouse-ca")?;
    write("ca.pem", &ca.pem().cert, false)?;
    write("ca-key.pem", &ca.pem().key, true)?;
    let mut names: Vec<String> = (1..=spec.nodes).map(|i| format!("node-{i}")).collect();
    names.extend(spec.clients.iter().cloned());
    for name in &names {
        let pem = ca.issue(name, &spec.hosts)?;
        write(&format!("{name}.pem"), &pem.cert, false)?;
        write(&format!("{name}-key.pem"), &pem.key, true)?;
    }
    write("gossip.key", &random_hex_key(&spec.dir)?, true)?;
    write("acl/model.conf", ACL_MODEL, false)?;
    write("acl/policy.csv", &acl_policy(spec), false)?;
    Ok(written)
}

/// The model `loghouse certs` writes (the same as examples/acl/model.conf).
pub const ACL_MODEL: &str = include_str!("../../examples/acl/model.conf");

fn acl_policy(spec: &CertsSpec) -> String {
    let mut policy = String::from("# subject (certificate CN), object (* = the log), action\n");
    if let Some(admin) = spec.clients.first() {
        for action in ["produce", "consume", "admin"] {
            policy.push_str(&format!("p, {admin}, *, {action}\n"));
        }
    }
    for i in 1..=spec.nodes {
        policy.push_str(&format!("p, node-{i}, *, raft\n"));
    }
    policy
}

fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(name.to_owned()))
    }
}

fn random_hex_key(dir: &Path) -> Result<String, CertError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let path = PathBuf::from("/dev/urandom");
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| CertError::Write {
            path: dir.join("gossip.key"),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
}

/// Writes `text` to `path` (creating its directory); a secret is readable by its owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::tls::{certificates, check_identity, common_name};

    #[test]
    fn issued_certificates_check_out_and_carry_their_cn() {
        let ca = Ca::new("test-ca").unwrap();
        let pem = ca
            .issue("root", &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        check_identity(pem.cert.as_bytes(), pem.key.as_bytes(), "test").unwrap();
        let der = certificates(pem.cert.as_bytes(), "test").unwrap();
        assert_eq!(common_name(&der[0]).as_deref(), Some("root"));
        let other = ca.issue("other", &[]).unwrap();
        let err = check_identity(pem.cert.as_bytes(), other.key.as_bytes(), "test").unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn writes_a_cluster_worth_of_files_and_a_matching_acl() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CertsSpec {
            dir: dir.path().to_owned(),
            nodes: 2,
            clients: vec!["root".into(), "nobody".into()],
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let files = write_cluster_certs(&spec).unwrap();
        assert_eq!(files.len(), 2 + 2 * 4 + 1 + 2);
        let policy = std::fs::read_to_string(dir.path().join("acl/policy.csv")).unwrap();
        let acl = crate::security::Authorizer::new(ACL_MODEL, &policy).unwrap();
        use crate::security::Action;
        acl.check("root", "*", Action::Produce).unwrap();
        acl.check("node-2", "*", Action::Raft).unwrap();
        assert!(acl.check("nobody", "*", Action::Consume).is_err());
        assert!(check_name("../evil").is_err());
    }
}
