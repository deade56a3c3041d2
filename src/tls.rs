//! TLS for the connections the library opens, on rustls (ring): the `"tls"` options (for the
//! backends; `"etcd": {"tls": ...}` for etcd, same shape), the PEM files they name, the client
//! configuration built from them and the handshake with one instance.
//!
//! Files are read once, when the client (or the registration) is made: a new client picks up
//! rotated certificates, a running one keeps what it read.
//!
//! The name a server's certificate must cover (and the SNI sent): the instance's etcd record's
//! `Metadata.server_name`, else `server_name`, else the host of the instance's address; an IP
//! address is verified as an IP (a certificate with that IP in its SAN).

use std::io::Read;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::json::{opt_bool, opt_str, Object};

/// `"tls"` as given, before any file is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsOptions {
    /// PEM certificates to trust.
    pub ca_file: Option<String>,
    /// With `key_file`: the client certificate chain (mTLS).
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// The name every server's certificate must cover, instead of the address's host.
    pub server_name: Option<String>,
    /// Trust the system's roots too; None: only when `ca_file` is not set.
    pub use_system_roots: Option<bool>,
}

const FIELDS: [&str; 5] = [
    "ca_file",
    "cert_file",
    "key_file",
    "server_name",
    "use_system_roots",
];

impl TlsOptions {
    /// Parses the object at `field` ("tls" or "etcd.tls"). Unknown keys are errors: a
    /// misspelt `ca_file` must not quietly mean the system's roots.
    pub(crate) fn from_value(v: &Value, field: &str) -> Result<TlsOptions, String> {
        let obj: &Object = v
            .as_object()
            .ok_or_else(|| format!("{field}: must be an object, got {v}"))?;
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "{field}: unknown field {unknown:?} (known: {})",
                FIELDS.join(", ")
            ));
        }
        let path = |key: &str| -> Result<Option<String>, String> {
            match opt_str(obj, key, field)? {
                Some(p) if p.is_empty() => Err(format!("{field}.{key}: must not be empty")),
                p => Ok(p),
            }
        };
        let o = TlsOptions {
            ca_file: path("ca_file")?,
            cert_file: path("cert_file")?,
            key_file: path("key_file")?,
            server_name: opt_str(obj, "server_name", field)?,
            use_system_roots: opt_bool(obj, "use_system_roots", field)?,
        };
        if o.cert_file.is_some() != o.key_file.is_some() {
            return Err(format!(
                "{field}: cert_file and key_file go together (the client certificate of mTLS)"
            ));
        }
        if let Some(name) = &o.server_name {
            server_name(name).map_err(|why| format!("{field}.server_name: {why}"))?;
        }
        if !o.system_roots() && o.ca_file.is_none() {
            return Err(format!(
                "{field}: no certificate to trust: set ca_file or use_system_roots"
            ));
        }
        Ok(o)
    }

    fn system_roots(&self) -> bool {
        self.use_system_roots.unwrap_or(self.ca_file.is_none())
    }
}

/// A name to verify a certificate against: a DNS name or an IP address.
fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("{name:?} is not a DNS name or an IP address"))
}

/// The largest file read as PEM: a CA bundle is a few hundred KiB.
const MAX_PEM_BYTES: u64 = 8 << 20;

/// TLS as loaded from [`TlsOptions`]: the rustls configuration for the backends and the PEM
/// contents for etcd's client (which builds its own rustls configuration through tonic).
pub struct Tls {
    field: &'static str,
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    system_roots: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("field", &self.field)
            .field("server_name", &self.server_name)
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity_pem.is_some())
            .field("system_roots", &self.system_roots)
            .finish()
    }
}

impl Tls {
    /// Reads and checks the files. Errors name the field and the path.
    pub fn load(o: &TlsOptions, field: &'static str) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let mut ca_pem = None;
        if let Some(path) = &o.ca_file {
            let pem = read(field, "ca_file", path)?;
            for cert in certificates(&pem, field, "ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{field}.ca_file: {path}: {e}"))?;
            }
            ca_pem = Some(pem);
        }
        let system_roots = o.system_roots();
        if system_roots {
            let (found, _unparsable) =
                roots.add_parsable_certificates(system_root_certs().iter().cloned());
            if found == 0 && o.ca_file.is_none() {
                return Err(format!(
                    "{field}: no system root certificates found (install ca-certificates, \
                     or set {field}.ca_file)"
                ));
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("{field}: {e}"))?
            .with_root_certificates(roots);
        let mut identity_pem = None;
        let mut config = match (&o.cert_file, &o.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read(field, "cert_file", cert_path)?;
                let chain = certificates(&cert_pem, field, "cert_file", cert_path)?;
                let key_pem = read(field, "key_file", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    format!(
                        "{field}.key_file: {key_path} holds no private key \
                         (PKCS#8, PKCS#1 or SEC1 PEM): {e}"
                    )
                })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("{field}.key_file: {key_path} does not go with {cert_path}: {e}")
                })?;
                identity_pem = Some((cert_pem, key_pem));
                config
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            field,
            config: Arc::new(config),
            server_name: o.server_name.as_deref().map(server_name).transpose()?,
            ca_pem,
            identity_pem,
            system_roots,
        })
    }

    /// TLS over `tcp` to the instance at `addr`; `record_name` is its record's
    /// `Metadata.server_name`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: &str,
        record_name: Option<&str>,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = self.name_for(addr, record_name)?;
        let stream = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| self.failed(addr, &name, &e))?;
        // gRPC over TLS is HTTP/2 chosen by ALPN (grpc-go refuses a server that chooses none):
        // a server that does not is not speaking gRPC on this port.
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Ok(stream),
            other => Err(format!(
                "tls handshake with {addr}: the server did not choose HTTP/2 by ALPN \
                 (it chose {}); it is no gRPC server",
                other.map_or("nothing".to_string(), |p| format!(
                    "{:?}",
                    String::from_utf8_lossy(p)
                ))
            )),
        }
    }

    /// Whether a client certificate is configured (mTLS).
    pub fn has_client_certificate(&self) -> bool {
        self.identity_pem.is_some()
    }

    fn name_for(
        &self,
        addr: &str,
        record_name: Option<&str>,
    ) -> Result<ServerName<'static>, String> {
        if let Some(name) = record_name {
            return server_name(name).map_err(|why| {
                format!("tls handshake with {addr}: the record's Metadata.server_name {why}")
            });
        }
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host_of(addr);
        server_name(host).map_err(|why| {
            format!(
                "tls handshake with {addr}: the host {why}; set {}.server_name",
                self.field
            )
        })
    }

    /// "tls handshake with ADDR: the rustls reason", with a hint when the certificate does not
    /// cover the name.
    fn failed(&self, addr: &str, name: &ServerName<'_>, e: &std::io::Error) -> String {
        let mut message = format!("tls handshake with {addr}: {}", reason(e));
        if let Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) = rustls_error(e)
        {
            message.push_str(&format!(
                " (verified as {:?}; set {}.server_name, or the record's Metadata.server_name, \
                 to a name the certificate covers)",
                name.to_str(),
                self.field
            ));
        }
        message
    }

    /// The same trust and identity for etcd's client (tonic's TLS).
    pub fn for_etcd(&self) -> etcd_client::TlsOptions {
        let mut t = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca_pem {
            t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if self.system_roots {
            t = t.with_native_roots();
        }
        if let Some((cert, key)) = &self.identity_pem {
            t = t.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            t = t.domain_name(name.to_str().into_owned());
        }
        t
    }
}

/// The host of "host:port" or "[v6]:port", without an IPv6 zone ("%eth0"): what a certificate
/// names.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.split_once('%').map_or(host, |(ip, _zone)| ip)
}

/// The rustls error inside an I/O error, if that is what it is.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// An I/O error's text, as rustls says it when it is a TLS failure (an alert from the server,
/// a certificate rejected) rather than the wrapper's.
pub(crate) fn reason(e: &std::io::Error) -> String {
    match rustls_error(e) {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// The system's trusted roots, read once per process (the OS store changes with the system,
/// not with a client: a new process picks up a changed store).
fn system_root_certs() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::warn!("system root certificates: {e}");
        }
        found.certs
    })
}

fn read(field: &str, key: &str, path: &str) -> Result<Vec<u8>, String> {
    // Not a FIFO or a device: opening one could block gf_connect forever.
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{field}.{key}: cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{field}.{key}: cannot read {path}: not a regular file"
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("{field}.{key}: cannot read {path}: {e}"))?;
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("{field}.{key}: cannot read {path}: {e}"))?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{field}.{key}: {path} is larger than {} MiB: not a PEM file",
            MAX_PEM_BYTES >> 20
        ));
    }
    Ok(pem)
}

fn certificates(
    pem: &[u8],
    field: &str,
    key: &str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{field}.{key}: {path} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{field}.{key}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<TlsOptions, String> {
        TlsOptions::from_value(&v, "tls")
    }

    #[test]
    fn an_empty_object_is_tls_with_the_system_roots() {
        let o = parse(json!({})).unwrap();
        assert_eq!(o, TlsOptions::default());
        assert!(o.system_roots());
        let o = parse(json!({"ca_file": "/ca.pem"})).unwrap();
        assert!(
            !o.system_roots(),
            "a ca_file alone replaces the system roots"
        );
        let o = parse(json!({"ca_file": "/ca.pem", "use_system_roots": true})).unwrap();
        assert!(o.system_roots());
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_field() {
        for (v, want) in [
            (json!("yes"), "tls: must be an object"),
            (json!({"ca_flie": "x"}), "tls: unknown field \"ca_flie\""),
            (json!({"ca_file": ""}), "tls.ca_file: must not be empty"),
            (json!({"ca_file": 3}), "tls.ca_file: must be a string"),
            (
                json!({"cert_file": "c.pem"}),
                "tls: cert_file and key_file go together",
            ),
            (
                json!({"key_file": "k.pem"}),
                "tls: cert_file and key_file go together",
            ),
            (
                json!({"server_name": "a b"}),
                "tls.server_name: \"a b\" is not a DNS name",
            ),
            (
                json!({"use_system_roots": 1}),
                "tls.use_system_roots: must be true or false",
            ),
            (
                json!({"use_system_roots": false}),
                "tls: no certificate to trust",
            ),
        ] {
            let err = parse(v.clone()).unwrap_err();
            assert!(err.starts_with(want), "{v}: {err}");
        }
        assert!(parse(json!({"server_name": "127.0.0.1"})).is_ok());
    }

    #[test]
    fn the_host_of_an_address_is_what_the_certificate_must_name() {
        assert_eq!(host_of("api.internal:443"), "api.internal");
        assert_eq!(host_of("127.0.0.1:50051"), "127.0.0.1");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("[fe80::1%eth0]:443"), "fe80::1");
        for addr in [
            "[::1]:443",
            "[fe80::1%eth0]:443",
            "127.0.0.1:1",
            "localhost:1",
        ] {
            assert!(server_name(host_of(addr)).is_ok(), "{addr}");
        }
    }

    #[test]
    fn missing_and_invalid_files_name_the_field_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem").display().to_string();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let garbage = garbage.display().to_string();
        let load = |v: Value| Tls::load(&parse(v).unwrap(), "tls").unwrap_err();
        let err = load(json!({"ca_file": missing}));
        assert!(
            err.starts_with(&format!("tls.ca_file: cannot read {missing}: ")),
            "{err}"
        );
        let err = load(json!({"ca_file": garbage}));
        assert!(
            err.starts_with(&format!("tls.ca_file: {garbage} holds no PEM certificate")),
            "{err}"
        );
        let dir_path = dir.path().display().to_string();
        let err = load(json!({"ca_file": dir_path}));
        assert!(err.ends_with("not a regular file"), "{err}");
        // A FIFO nobody writes to would block the open forever.
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = load(json!({"ca_file": fifo.display().to_string()}));
        assert!(err.ends_with("not a regular file"), "{err}");
    }
}
