//! The collector benchmark's reference (`scripts/bench-collector.sh`): an axum server on
//! the same runtime the collector uses (one worker per core) whose every POST reads its
//! body and answers 202, writing nothing anywhere. What the collector costs beyond it is
//! its own work: the key, the JSON check, the record, Kafka's acknowledgement.
//!
//!   cargo bench --bench noop_http -- PORT      (prints "listening", runs until killed)

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

fn main() {
    // `cargo test --all-targets` runs benches without arguments: nothing to do.
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: noop_http PORT");
        return;
    };
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_io()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async move {
        let app = Router::new().fallback(post(|body: Bytes| async move {
            std::hint::black_box(body.len());
            StatusCode::ACCEPTED
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        println!("listening");
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("noop_http: {e}");
        }
    });
}
