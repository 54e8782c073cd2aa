//! TLS on the collector's listener: rustls (ring), the certificate chain and key from
//! PEM files, HTTP/1.1 over each accepted connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::CollectorConfig;

/// How long the connections open at stop may take to finish.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The server's TLS settings from `tls_cert_file` and `tls_key_file`.
pub fn server_config(config: &CollectorConfig) -> Result<rustls::ServerConfig, String> {
    let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Err("collector: TLS needs tls_cert_file and tls_key_file".to_owned());
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| format!("collector.tls_cert_file: {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "collector.tls_cert_file: {} holds no PEM certificate",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("collector.tls_key_file: {}: {e}", key.display()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("collector: TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, private)
    .map_err(|e| {
        format!(
            "collector.tls_cert_file / tls_key_file: {} and {} do not make a certificate and its key: {e}",
            cert.display(),
            key.display()
        )
    })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// Accepts TLS connections until `stop` fires; each served on its own task. A failed
/// handshake closes that connection only. At stop, the connections in flight get up to
/// [`DRAIN`] to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("collector: accepting a connection: {e}");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let open = Arc::clone(&open);
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _open = Open(open);
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("collector: TLS handshake with {peer} failed: {e}");
                    return;
                }
            };
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("collector: connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + DRAIN;
    while open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One open connection, counted while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
