//! The one shape of a controller's background work. Each component owns its
//! state, runs one loop for the server's life, and is woken by the others
//! through [`BackgroundLoop::wake`] rather than by sharing its state.

use std::sync::Arc;

use tokio::sync::watch;

/// A loop that runs for the server's life: started once, woken when what it
/// watches may have changed, and ended when the server stops.
pub(crate) trait BackgroundLoop: Send + Sync + 'static {
    /// Spawns the loop; it ends once `stop` turns true.
    fn start(self: Arc<Self>, stop: watch::Receiver<bool>);
    /// Asks for a pass soon. Wakes coalesce: many before a pass make one.
    fn wake(&self);
}
