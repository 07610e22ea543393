//! One service process: its database, the broker, its background tasks and
//! its HTTP server, started in order and stopped gracefully.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use wallet_core::ids::{IdGenerator, RandomIds};
use wallet_core::ports::{Outbox, SystemClock};
use wallet_core::runtime::{
    ConsumerConfig, ConsumerRunner, EventHandler, LoopHandle, Loops, Place, Relay, Route,
    SupervisorConfig, retry_topic,
};
use wallet_core::time::Clock;
use wallet_core_kafka::{KafkaPublisher, KafkaSettings, KafkaSubscription};
use wallet_core_postgres::{OutboxWake, PgSettings, Schema};

use crate::health::{self, Check};
use crate::settings::Common;
use crate::telemetry::{Metrics, Tracing, track_requests};
use crate::traced::{TracedHandler, TracedPublisher};

/// How often the backlog and lag gauges (and the transaction service's
/// unfinished transfers) are read.
pub const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// The fetch wait of the consumers of retry topics (at least).
const RETRY_FETCH_WAIT: Duration = Duration::from_secs(1);
/// How often published outbox rows past the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How long the producer may take to deliver what it still holds at exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves once `flag` is set, or its sender is gone.
fn until_set(flag: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut flag = flag.subscribe();
    async move {
        // An error means the sender is gone: the process is ending too.
        let _ = flag.wait_for(|set| *set).await;
    }
}

/// Routes a process serves on an address of their own, apart from its
/// public API: the wallet service's internal routes.
pub struct InternalRoutes {
    /// The routes (guarding themselves: the listener adds no check).
    pub routes: Router,
    /// Their description, served at `/openapi.json` on that address.
    pub doc: utoipa::openapi::OpenApi,
    /// The address.
    pub listen: SocketAddr,
    /// The identity to serve them over TLS with; plain HTTP without.
    pub tls: Option<wallet_http::ServerTls>,
}

/// A listener on `addr`, or why not.
async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// What one listener serves: `routes` (counted by route), their
/// description `doc` at `/openapi.json`, `extra` (not counted),
/// `/healthz`, 404 and 405 in the error shape, and request tracing
/// (method and path, never the headers: no credential reaches the log).
fn listener_app(routes: Router, doc: utoipa::openapi::OpenApi, extra: Router) -> Router {
    wallet_http::service_router(
        track_requests(routes)
            .merge(wallet_http::openapi::route(doc))
            .merge(extra),
    )
}

/// The stop a supervised loop heeds between its steps.
type BoxStop = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A started process: what its services are built from, and its tasks.
pub struct Process {
    /// The settings it started with.
    pub common: Common,
    /// The database pool.
    pub pool: PgPool,
    /// The store settings, from [`Common`].
    pub pg: PgSettings,
    /// The broker settings, from [`Common`].
    pub kafka: KafkaSettings,
    /// One producer for every relay and runner of the process.
    pub publisher: KafkaPublisher,
    /// Woken by this process's writes and by `NOTIFY` from other instances:
    /// the wake of the process's relay, and the `outbox_written` of its
    /// service.
    pub outbox_written: Arc<Notify>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Ids (and the worker id of each relay and the retrier).
    pub ids: Arc<dyn IdGenerator>,
    metrics: Option<Metrics>,
    /// Taken at the stop, to export what is left.
    traces: Option<Tracing>,
    name: &'static str,
    _wake: OutboxWake,
    draining: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The state of every supervised background loop.
    loops: Loops,
}

impl Common {
    /// The store settings these flags give.
    pub fn pg_settings(&self) -> PgSettings {
        PgSettings {
            max_connections: self.db_max_connections,
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            lock_timeout: Duration::from_millis(self.db_lock_timeout_ms),
            claim_lease: Duration::from_millis(self.outbox_lease_ms),
            relay_poll: Duration::from_millis(self.relay_poll_ms),
            sent_retention: Duration::from_secs(self.outbox_retention_hours * 3600),
            ..PgSettings::default()
        }
    }

    /// The broker settings these flags give.
    pub fn kafka_settings(&self, client_id: &str) -> KafkaSettings {
        let mut kafka = KafkaSettings::new(self.kafka_bootstrap_servers.clone());
        kafka.client_id = client_id.to_owned();
        kafka.partitions = self.kafka_partitions;
        kafka.fetch_wait = Duration::from_millis(self.kafka_fetch_wait_ms);
        kafka
            .properties
            .extend(self.kafka_properties.iter().cloned());
        kafka
    }

    /// The consumer runners' configuration.
    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            batch_size: self.consumer_batch,
            stall_after: Duration::from_millis(self.consumer_stall_ms),
            schema_version: self.event_schema_version,
            ..ConsumerConfig::default()
        }
    }
}

impl Process {
    /// The database (its schema checked: this build's migrations
    /// applied), the topics and the producer, in that order; any failure
    /// stops the start with its reason. The process migrates nothing: it
    /// connects as the runtime role, which may not, and `walletctl migrate`
    /// runs the migrations as the owner role first.
    ///
    /// It installs nothing process-wide: its logs go to the `tracing`
    /// subscriber and its metrics to the `metrics` recorder the caller
    /// installed (a binary installs [`crate::telemetry::logs`] and
    /// [`Metrics::recorder`]; a program embedding the services keeps its
    /// own). `metrics`, when given, is served at `/metrics`.
    pub async fn start(
        common: Common,
        name: &'static str,
        schema: Schema,
        metrics: Option<Metrics>,
    ) -> anyhow::Result<Process> {
        let pg = common.pg_settings();
        let pool = pg
            .connect(&common.database_url)
            .await
            .context("connecting to the database")?;
        wallet_core_postgres::check_schema(&pool, schema)
            .await
            .context("checking the database")?;
        match wallet_core_postgres::unbounded_role(&pool).await {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!(service = name, "{warning}"),
            Err(error) => tracing::warn!(service = name, %error, "cannot read the database role"),
        }
        let kafka = common.kafka_settings(name);
        // The broker's address, TLS and SASL settings, checked before
        // anything is asked of it: a certificate or a password refused ends
        // the wait at once, saying so.
        wallet_core_kafka::reachable(&kafka)
            .await
            .with_context(|| format!("reaching the broker at {}", kafka.bootstrap_servers))?;
        wallet_core_kafka::ensure_topics(&kafka)
            .await
            .context("creating the topics")?;
        let publisher = KafkaPublisher::new(&kafka).context("creating the producer")?;
        let wake = OutboxWake::listen(&pool)
            .await
            .context("listening for outbox rows")?;
        let (stop, _) = watch::channel(false);
        let (draining, _) = watch::channel(false);
        let common_stall = common.loop_stall_ms;
        tracing::info!(
            service = name,
            "started: database schema current, topics ready"
        );
        Ok(Process {
            outbox_written: wake.notify(),
            pool,
            pg,
            kafka,
            publisher,
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            metrics,
            traces: None,
            name,
            common,
            _wake: wake,
            draining,
            stop,
            tasks: Vec::new(),
            loops: Loops::new(SupervisorConfig {
                stall_after: Duration::from_millis(common_stall),
                ..SupervisorConfig::default()
            }),
        })
    }

    /// Resolves once the process is told to stop, after the requests in
    /// flight have finished: background tasks end on it.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        until_set(&self.stop)
    }

    /// Resolves once the process is told to stop, as its drain begins
    /// (before it stops taking requests and waits for those in flight): a
    /// service ends its long waits on it, so that they answer at once.
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        until_set(&self.draining)
    }

    /// Runs `start`'s loop as `name` under the process's supervisor until
    /// the process stops: restarted with backoff after an error or a panic,
    /// its state in `/readyz` and the loop gauges.
    fn supervise<F, Fut>(&mut self, name: &str, mut start: F)
    where
        F: FnMut(LoopHandle, BoxStop) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let stop = self.stop.clone();
        let task = self.loops.supervise(
            name,
            move |handle| start(handle, Box::pin(until_set(&stop))),
            self.stopping(),
        );
        self.tasks.push(task);
    }

    /// Runs a relay of `outbox` along `route` until the process stops.
    pub fn spawn_relay<O: Outbox + Clone>(&mut self, outbox: O, route: Route) {
        let (publisher, clock, ids) =
            (self.publisher.clone(), self.clock.clone(), self.ids.clone());
        let (wake, config) = (self.outbox_written.clone(), self.pg.relay_config());
        let route = route.writing(self.common.event_schema_version);
        self.supervise(&format!("relay {}", route.group), move |status, stop| {
            let relay = Relay::new(
                outbox.clone(),
                TracedPublisher::new(publisher.clone(), &route.group),
                route.clone(),
                clock.clone(),
                ids.worker_id(),
                wake.clone(),
                config.clone(),
            )
            .reporting_to(status);
            async move {
                relay.run_until(stop).await;
                Ok(())
            }
        });
    }

    /// Runs a consumer of `topic` in `group` into `handler` until the
    /// process stops. An integrity failure stops the consumer: it is
    /// logged, counted, shown as stalled in `/readyz`, and started again
    /// (as a new group member) after the supervisor's backoff, while the
    /// process keeps serving.
    ///
    /// An event that keeps failing alone is parked on the group's retry
    /// topic; a second consumer (group `<group>.retry`) reads it there and
    /// retries it with backoff, holding back only the retry topic's
    /// partition. Its lag gauge counts the parked events not handled yet.
    pub fn spawn_consumer<H: EventHandler + Clone>(
        &mut self,
        handler: H,
        group: &'static str,
        topic: &str,
    ) -> anyhow::Result<()> {
        let config = ConsumerConfig {
            park: true,
            ..self.common.consumer_config()
        };
        self.spawn_runner(handler.clone(), group, topic, self.kafka.clone(), config)?;
        let retry = retry_topic(group);
        let config = ConsumerConfig {
            park: false,
            ..self.common.consumer_config()
        };
        // Retries need no promptness: a long fetch wait keeps the idle
        // retry consumer from costing the broker a round per fetch wait.
        let mut kafka = self.kafka.clone();
        kafka.fetch_wait = kafka.fetch_wait.max(RETRY_FETCH_WAIT);
        self.spawn_runner(handler, &retry, &retry, kafka, config)
    }

    /// A supervised runner of `topic` in `group`, and its lag gauge.
    fn spawn_runner<H: EventHandler + Clone>(
        &mut self,
        handler: H,
        group: &str,
        topic: &str,
        kafka: KafkaSettings,
        config: ConsumerConfig,
    ) -> anyhow::Result<()> {
        let publisher = self.publisher.clone();
        let handler = TracedHandler::new(handler, group);
        let (group_name, subject) = (group.to_owned(), topic.to_owned());
        self.supervise(&format!("consumer {group}"), move |status, stop| {
            let (kafka, publisher, config) = (kafka.clone(), publisher.clone(), config.clone());
            let (handler, group, topic) = (handler.clone(), group_name.clone(), subject.clone());
            async move {
                let subscription = KafkaSubscription::new(&kafka, &group, &topic)
                    .map_err(|e| format!("subscribing {group} to {topic}: {e}"))?;
                let runner = ConsumerRunner::new(subscription, handler, publisher, group, config)
                    .reporting_to(status);
                match runner.run_until(stop).await {
                    None => Ok(()),
                    Some(error) => Err(format!("consumer stopped: {error}")),
                }
            }
        });
        self.spawn_lag_gauge(group, topic)
    }

    /// Runs `pass` every `period` until the process stops, supervised as
    /// `name`: a pass that fails is reported (stalled once it keeps
    /// failing), one that panics restarts the loop.
    pub fn spawn_every<F, Fut>(&mut self, name: &str, period: Duration, pass: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let pass = Arc::new(pass);
        self.supervise(name, move |status, stop| {
            let pass = pass.clone();
            async move {
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        () = &mut stop => return Ok(()),
                        () = tokio::time::sleep(period) => match pass().await {
                            Ok(()) => status.ok(),
                            Err(error) => {
                                tracing::error!(loop_name = status.name(), %error, "pass failed");
                                status.failed(&error, Place::default());
                            }
                        },
                    }
                }
            }
        });
    }

    /// The consumer lag gauge of `group` on `topic`.
    fn spawn_lag_gauge(&mut self, group: &str, topic: &str) -> anyhow::Result<()> {
        let probe = Arc::new(
            wallet_core_kafka::GroupLag::new(&self.kafka, group, topic)
                .context("creating the lag probe")?,
        );
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.spawn_every(&format!("lag gauge {group}"), GAUGE_EVERY, move || {
            let (probe, group, topic) = (probe.clone(), group.clone(), topic.clone());
            async move {
                match probe.lag().await {
                    Ok(lag) => {
                        metrics::gauge!("wallet_consumer_lag", "group" => group, "topic" => topic)
                            .set(lag as f64)
                    }
                    Err(error) => tracing::warn!(%group, %error, "cannot read the consumer lag"),
                }
                Ok(())
            }
        });
        Ok(())
    }

    /// The outbox backlog gauges and the pruning of sent rows.
    fn spawn_outbox_upkeep(&mut self) {
        let pool = self.pool.clone();
        let loops = self.loops.clone();
        self.spawn_every("gauges", GAUGE_EVERY, move || {
            let (pool, loops) = (pool.clone(), loops.clone());
            async move {
                for state in loops.states() {
                    let up = if state.up { 1.0 } else { 0.0 };
                    let stalled = if state.stalled { 1.0 } else { 0.0 };
                    metrics::gauge!("wallet_loop_up", "loop" => state.name.clone()).set(up);
                    metrics::gauge!("wallet_loop_stalled", "loop" => state.name).set(stalled);
                }
                match wallet_core_postgres::outbox_backlog(&pool).await {
                    Ok(backlog) => {
                        metrics::gauge!("wallet_outbox_backlog").set(backlog.waiting as f64);
                        let age = backlog.oldest.map_or(0.0, |d| d.as_secs_f64());
                        metrics::gauge!("wallet_outbox_oldest_seconds").set(age);
                        metrics::gauge!("wallet_outbox_quarantined")
                            .set(backlog.quarantined as f64);
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the outbox backlog"),
                }
                Ok(())
            }
        });
        let (pool, retention, batch) = (
            self.pool.clone(),
            self.pg.sent_retention,
            self.pg.prune_batch,
        );
        self.spawn_every("outbox pruning", PRUNE_EVERY, move || {
            let pool = pool.clone();
            async move {
                match wallet_core_postgres::prune_sent(&pool, retention, batch).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "published outbox rows pruned"),
                    Err(error) => tracing::warn!(%error, "pruning the outbox failed"),
                }
                Ok(())
            }
        });
    }

    /// Serves `api` (the service's routes) with `/openapi.json` (`doc`),
    /// `/healthz`, `/readyz`, `/metrics` on the configured address (`port`
    /// on 127.0.0.1 by default), and `internal`'s routes, if any, on their
    /// own address, until `shutdown` resolves (a binary passes
    /// `wallet_http::shutdown_signal()`: SIGTERM or Ctrl-C; a program
    /// embedding the services, its own stop). Then it resolves
    /// [`Process::draining`] (`/readyz` answers 503, long polls answer at
    /// once), keeps serving for the drain delay, stops taking requests on
    /// both addresses, lets the requests in flight finish, stops the
    /// background tasks between batches, waits for them up to the grace
    /// period, and flushes the producer.
    pub async fn serve(
        mut self,
        api: Router,
        doc: utoipa::openapi::OpenApi,
        port: u16,
        internal: Option<InternalRoutes>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.spawn_outbox_upkeep();
        let checks = self.readiness_checks();
        let metrics = self
            .metrics
            .as_ref()
            .map_or_else(Router::new, Metrics::route);
        let operations = metrics.merge(health::readiness(
            checks,
            self.loops.clone(),
            Duration::from_secs(2),
            self.draining.subscribe(),
        ));
        let public = bind(self.common.listen_or(port)).await?;
        let internal = match internal {
            Some(internal) => Some((bind(internal.listen).await?, internal)),
            None => None,
        };
        // The first line on stdout is the public address, for scripts that
        // start the service on port 0; the internal address follows.
        let addr = public.local_addr()?;
        println!("{} listening on http://{addr}", self.name);
        tracing::info!(service = self.name, %addr, "serving");
        // The shutdown (SIGTERM) sets `draining` (`/readyz` answers 503,
        // long polls answer at once); the listeners keep serving for the
        // drain delay, then stop taking connections and let those in
        // flight finish.
        let (closing, _) = watch::channel(false);
        let public = wallet_http::serve_until(
            public,
            listener_app(api, doc, operations),
            until_set(&closing),
        );
        let (draining, delay) = (self.draining.clone(), self.common.drain_delay());
        let internal_closing = until_set(&closing);
        tokio::spawn(async move {
            shutdown.await;
            draining.send_replace(true);
            tracing::info!(?delay, "draining: not ready, still serving");
            tokio::time::sleep(delay).await;
            closing.send_replace(true);
        });
        match internal {
            None => public.await?,
            Some((listener, internal)) => {
                let addr = listener.local_addr()?;
                let scheme = if internal.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                // A reader that wanted the first line only may have closed
                // stdout already: the line is not worth a panic.
                let mut stdout = std::io::stdout();
                let _ = writeln!(stdout, "{} internal routes on {scheme}://{addr}", self.name)
                    .and_then(|()| stdout.flush());
                tracing::info!(service = self.name, %addr, scheme, "serving the internal routes");
                let app = listener_app(internal.routes, internal.doc, Router::new());
                match internal.tls {
                    None => {
                        let serving = wallet_http::serve_until(listener, app, internal_closing);
                        tokio::try_join!(public, serving)?;
                    }
                    Some(tls) => {
                        let listener = wallet_http::TlsListener::new(listener, tls)?;
                        let serving = wallet_http::serve_until(listener, app, internal_closing);
                        tokio::try_join!(public, serving)?;
                    }
                }
            }
        }
        let _ = self.stop.send(true);
        let grace = self.common.shutdown_grace();
        let tasks = std::mem::take(&mut self.tasks);
        let finished = tokio::time::timeout(grace, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                ?grace,
                "background tasks still busy after the grace period; stopping anyway"
            );
        }
        // Whatever a loop handed the producer last goes out before the
        // process does (a relay waits for its deliveries; a consumer's dead
        // letters too, but a flush costs nothing when all is delivered).
        let publisher = self.publisher.clone();
        let flushed = tokio::task::spawn_blocking(move || publisher.flush(FLUSH_TIMEOUT)).await;
        match flushed {
            Ok(Ok(())) => tracing::info!(service = self.name, "producer flushed"),
            Ok(Err(error)) => tracing::error!(%error, "messages left undelivered at exit"),
            Err(error) => tracing::error!(%error, "flushing the producer failed"),
        }
        tracing::info!(service = self.name, "stopped");
        if let Some(traces) = self.traces.take() {
            traces.shutdown().await;
        }
        Ok(())
    }

    /// The process flushes `traces` (the span exporter [`crate::telemetry::logs`]
    /// made with the subscriber the binary installed) at its stop.
    pub fn with_traces(mut self, traces: Tracing) -> Process {
        tracing::info!(
            service = self.name,
            exporting_spans = traces.exporting(),
            "traces"
        );
        self.traces = Some(traces);
        self
    }

    /// The database and the broker answer.
    fn readiness_checks(&self) -> Vec<(&'static str, Check)> {
        let pool = self.pool.clone();
        let kafka = self.kafka.clone();
        vec![
            (
                "database",
                health::check(move || {
                    let pool = pool.clone();
                    async move {
                        sqlx::query("SELECT 1")
                            .execute(&pool)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }
                }),
            ),
            (
                "broker",
                health::check(move || {
                    let kafka = kafka.clone();
                    async move {
                        wallet_core_kafka::reachable(&kafka)
                            .await
                            .map_err(|e| e.to_string())
                    }
                }),
            ),
        ]
    }
}
