//! The operator's HTTP endpoints: `/healthz` (the controller loop runs and makes progress, and a
//! leader syncs its caches in time), `/readyz`
//! (it stands by ready to take over, or it leads and its caches are synced),
//! `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::OperatorError;
use crate::metrics::Metrics;

/// How long reconciles may be in flight without any of them finishing before `/healthz`
/// says the controller is stuck. Every hook call and request is bounded far below this.
pub const STALL_BOUND: Duration = Duration::from_mins(15);

/// How long a replica may hold the lease without its caches synced before `/healthz` fails:
/// a leader that cannot list what it reconciles (a watch refused, an API server that never
/// answers the list) holds the lease for nothing, and only a restart lets the standby lead.
pub const SYNC_BOUND: Duration = Duration::from_mins(5);

/// Whether the controller loop makes progress: reconciles started and finished, and when the
/// last one finished.
#[derive(Debug)]
pub struct Progress {
    started: AtomicU64,
    finished: AtomicU64,
    last_finished: Mutex<Instant>,
    /// The controller should be running (this replica leads) but its loop has ended.
    stopped: AtomicBool,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            last_finished: Mutex::new(Instant::now()),
            stopped: AtomicBool::new(false),
        }
    }
}

impl Progress {
    /// A reconcile starts.
    pub fn begin(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A reconcile finished (whatever its result).
    pub fn reconciled(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        *self
            .last_finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// The controller loop ended although this replica still leads.
    pub fn set_stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// `Err(why)` when the controller is stopped or stuck.
    pub fn check(&self, now: Instant, bound: Duration) -> Result<(), String> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err("the controller loop has stopped".into());
        }
        let in_flight = self
            .started
            .load(Ordering::Relaxed)
            .saturating_sub(self.finished.load(Ordering::Relaxed));
        let idle_for = now.saturating_duration_since(
            *self
                .last_finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if in_flight > 0 && idle_for > bound {
            return Err(format!(
                "{in_flight} reconciles in flight and none finished for {}s",
                idle_for.as_secs()
            ));
        }
        Ok(())
    }
}

/// Where this replica stands, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Connecting, checking the CRD, starting the sandbox: not ready.
    #[default]
    Starting,
    /// Competing for the lease and able to take over: ready (a rollout need not wait for the
    /// lease to move).
    Standby,
    /// Holds the lease (or runs without election); its caches (Scalers, plugin ConfigMaps,
    /// HPAs) are still listing: not ready, it would act on a partial view.
    Syncing,
    /// Holds the lease and its caches are synced: ready.
    Leading,
}

impl Role {
    /// `/readyz`'s answer: ready or not, and the word it says.
    pub fn readiness(self) -> (bool, &'static str) {
        match self {
            Self::Starting => (false, "starting"),
            Self::Standby => (true, "standby"),
            Self::Syncing => (false, "leading; caches not yet synced"),
            Self::Leading => (true, "leading; caches synced"),
        }
    }
}

/// Shared health state, set by the operator's main loop.
#[derive(Debug)]
pub struct Health {
    /// The role, and since when.
    role: Mutex<(Role, Instant)>,
    /// The controller's progress (for `/healthz`).
    pub progress: Arc<Progress>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            role: Mutex::new((Role::default(), Instant::now())),
            progress: Arc::default(),
        }
    }
}

impl Health {
    pub fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(PoisonError::into_inner) = (role, Instant::now());
    }
    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// `/healthz`: `Err(why)` when the controller loop stopped, its reconciles stall for
    /// `stall_bound`, or it has led for `sync_bound` without its caches synced.
    pub fn check_live(
        &self,
        now: Instant,
        stall_bound: Duration,
        sync_bound: Duration,
    ) -> Result<(), String> {
        self.progress.check(now, stall_bound)?;
        let (role, since) = *self.role.lock().unwrap_or_else(PoisonError::into_inner);
        let for_ = now.saturating_duration_since(since);
        if role == Role::Syncing && for_ > sync_bound {
            return Err(format!(
                "leading for {}s and the caches have not synced",
                for_.as_secs()
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state
        .health
        .check_live(Instant::now(), STALL_BOUND, SYNC_BOUND)
    {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.role().readiness() {
        (true, why) => (StatusCode::OK, why),
        (false, why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Binds `addr` and returns the bound address and the serving future.
pub async fn bind(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, impl Future<Output = Result<(), OperatorError>>), OperatorError> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self::metrics))
        .with_state(AppState { health, metrics });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OperatorError::Serve { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| OperatorError::Serve { addr, source })?;
    let serve = async move {
        axum::serve(listener, app)
            .await
            .map_err(|source| OperatorError::Serve { addr, source })
    };
    Ok((bound, serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_fails_when_reconciles_stall_or_the_loop_stops() {
        let p = Progress::default();
        let now = Instant::now();
        let later = now + Duration::from_mins(2);
        assert!(
            p.check(later, Duration::from_mins(1)).is_ok(),
            "idle is healthy"
        );
        p.begin();
        assert!(p.check(now, Duration::from_mins(1)).is_ok());
        let err = p.check(later, Duration::from_mins(1)).unwrap_err();
        assert!(err.contains("1 reconciles in flight"), "{err}");
        p.reconciled();
        assert!(p.check(Instant::now(), Duration::from_mins(1)).is_ok());
        p.set_stopped();
        assert!(p.check(Instant::now(), Duration::from_mins(1)).is_err());
    }

    #[test]
    fn readyz_is_ready_standing_by_or_leading_with_synced_caches() {
        let rows = [
            (Role::Starting, false),
            (Role::Standby, true),
            (Role::Syncing, false),
            (Role::Leading, true),
        ];
        for (role, ready) in rows {
            assert_eq!(role.readiness().0, ready, "{role:?}");
        }
        let health = Health::default();
        assert_eq!(
            health.role(),
            Role::Starting,
            "not ready before start-up is done"
        );
    }

    #[test]
    fn healthz_fails_when_a_leader_never_syncs_its_caches() {
        let health = Health::default();
        let bound = Duration::from_mins(5);
        let later = Instant::now() + Duration::from_mins(6);
        health.set_role(Role::Standby);
        assert!(
            health.check_live(later, STALL_BOUND, bound).is_ok(),
            "a standby waits as long as it takes"
        );
        health.set_role(Role::Syncing);
        assert!(
            health
                .check_live(Instant::now(), STALL_BOUND, bound)
                .is_ok()
        );
        let err = health.check_live(later, STALL_BOUND, bound).unwrap_err();
        assert!(err.contains("caches have not synced"), "{err}");
        health.set_role(Role::Leading);
        assert!(health.check_live(later, STALL_BOUND, bound).is_ok());
    }
}
