//! How many requests the dashboard served, by route: one atomic counter per route, bumped
//! by the route's handler and read by `/metrics` (`rask_dashboard_requests_total`). A
//! request costs one relaxed increment: no lock, no allocation, no map lookup.
//!
//! Only the pages and the API are counted (a fixed, small set of routes, so the metric's
//! cardinality is bounded); assets, `/health` and unknown paths are not.

use std::sync::atomic::{AtomicU64, Ordering};

/// A route whose requests are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Status,
    Workers,
    Devices,
    Graph,
    Task,
    ApiStatus,
    ApiGetWorkers,
    ApiTaskStream,
    ApiStory,
    ApiGraph,
    Metrics,
}

impl Route {
    /// Every counted route, in the order `/metrics` lists them.
    pub(crate) const ALL: [Route; 11] = [
        Route::Status,
        Route::Workers,
        Route::Devices,
        Route::Graph,
        Route::Task,
        Route::ApiStatus,
        Route::ApiGetWorkers,
        Route::ApiTaskStream,
        Route::ApiStory,
        Route::ApiGraph,
        Route::Metrics,
    ];

    /// Its name, the `route` label's value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Route::Status => "status",
            Route::Workers => "workers",
            Route::Devices => "devices",
            Route::Graph => "graph",
            Route::Task => "task",
            Route::ApiStatus => "api_status",
            Route::ApiGetWorkers => "api_get_workers",
            Route::ApiTaskStream => "api_task_stream",
            Route::ApiStory => "api_story",
            Route::ApiGraph => "api_graph",
            Route::Metrics => "metrics",
        }
    }
}

/// One counter per [`Route`], indexed by its position in [`Route::ALL`].
#[derive(Debug, Default)]
pub(crate) struct Requests([AtomicU64; Route::ALL.len()]);

impl Requests {
    /// Counts one request to `route`.
    pub(crate) fn count(&self, route: Route) {
        self.0[route as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every route's name and count so far.
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        Route::ALL
            .iter()
            .map(|r| (r.name(), self.0[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_counts_its_own_requests() {
        let r = Requests::default();
        r.count(Route::Graph);
        r.count(Route::Graph);
        r.count(Route::Metrics);
        let counts = r.counts();
        assert_eq!(counts.len(), 11);
        assert_eq!(counts[3], ("graph", 2));
        assert_eq!(counts[10], ("metrics", 1));
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 3);
        // The discriminant is the index into ALL.
        for (i, route) in Route::ALL.iter().enumerate() {
            assert_eq!(*route as usize, i, "{route:?}");
        }
    }
}
