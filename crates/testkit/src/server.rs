//! A real server on a free loopback port over a fresh embedded store, for tests (this crate's, the
//! client's and the CLI's).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use errand_server::AppState;
use errand_server::Config;
use errand_server::Server;

/// A running server. Shut it down with [`TestServer::shutdown`]; dropping it stops it too, less
/// gracefully.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with the default settings on a store in a new temporary directory.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = Config::with_data_dir(dir.path());
        let mut s = TestServer::start_with(config).await;
        s._dir = Some(dir);
        s
    }

    /// A server with `config`, listening on a free loopback port (whatever `config.listen` says).
    pub async fn start_with(mut config: Config) -> TestServer {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(config.listen)
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let server = Server::open(config).await.expect("the server opens");
        let state = server.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's state (its engine, to look behind the API).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Shuts down gracefully and waits until the store is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task")
                .expect("a clean shutdown");
        }
    }
}
