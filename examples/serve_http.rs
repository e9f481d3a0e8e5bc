//! Serves a folder over HTTP with Range support on 127.0.0.1 (tower-http's
//! ServeDir), to try remote experts without a cloud account:
//!
//! ```sh
//! cargo run --release --example serve_http -- assets 8000 &
//! cargo run --release -- --headless validate http://127.0.0.1:8000/demo.expert
//! ```

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| ".".into());
    let port: u16 = args.next().map_or(Ok(8000), |p| p.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        // The bound address (port 0 picks a free one): the first line on stderr.
        eprintln!(
            "serving {dir} at http://{}/ (Ctrl-C stops)",
            listener.local_addr()?
        );
        let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
        axum::serve(listener, app).await?;
        Ok(())
    })
}
