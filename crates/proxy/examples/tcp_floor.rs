//! The cheapest proxy tokio can be, for `bench/proxy.sh`: bytes in, bytes
//! out, one upstream connection per client connection, no HTTP at all. What
//! it reaches on a machine bounds what any tokio-based proxy (wharf's
//! included) can reach there; the HTTP work is on top of it.
//!
//! Usage: tcp_floor LISTEN UPSTREAM [THREADS]
//! Each thread runs its own current-thread runtime on its own SO_REUSEPORT
//! socket, as wharf's proxy workers do.

use std::net::SocketAddr;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: tcp_floor LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let parse = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|e| panic!("`{s}` is not host:port: {e}"));
    let (listen, upstream) = (parse(listen), parse(upstream));
    let threads: usize = args.get(3).map_or(1, |t| t.parse().expect("THREADS is a number"));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseport(true).expect("SO_REUSEPORT");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            socket.bind(listen).unwrap_or_else(|e| panic!("bind {listen}: {e}"));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let listener = socket.listen(4096).expect("listen");
                    loop {
                        let Ok((mut client, _)) = listener.accept().await else { continue };
                        tokio::spawn(async move {
                            let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else { return };
                            let _ = (client.set_nodelay(true), up.set_nodelay(true));
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                        });
                    }
                })
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
