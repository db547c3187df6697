//! wharf's data plane. It reads an immutable [`RoutingTable`] that the
//! control plane builds and swaps in atomically; it never calls the store or
//! the controllers, so a slow control plane cannot slow a request down.

mod routing;
mod server;

pub use routing::{Backend, HostMatch, Pool, RouteSpec, RoutingTable};
pub use server::{Proxy, ProxyError};
