//! The dashboard as an operator: it binds the web server at start, asks
//! the daemon for status every `poll_interval`, and watches the bus
//! subjects its manifest lets it read.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{select_all, StreamExt};
use switchboard_bus::{Bus, Context, HandlerResult, HealthReport, Operator};
use switchboard_proto::api::{methods, StatusReply, StatusRequest};
use switchboard_proto::{api_subject, Health};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::DashboardConfig;
use crate::hub::{Counters, Hub};
use crate::server::{router, App};

/// What it watches: chat and send traffic, lifecycle events, operators'
/// output, heartbeats. Read-only grants in its manifest.
pub const WATCHED: [&str; 5] = ["chat.>", "send.>", "sb.event.>", "sb.log.>", "sb.op.>"];

/// How long the web server may take to finish open requests at stop.
const DRAIN: Duration = Duration::from_secs(2);

/// The dashboard operator.
#[derive(Debug, Default)]
pub struct Dashboard {
    stop: Option<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Operator for Dashboard {
    type Config = DashboardConfig;

    async fn start(&mut self, ctx: &mut Context, config: DashboardConfig) -> HandlerResult {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}; change `listen`", config.listen))?;
        let addr = listener.local_addr()?;
        let stats = ctx.bus().stats();
        let counters = Counters {
            tail_dropped: stats.counter("tail_dropped"),
            status_errors: stats.counter("status_errors"),
            unauthorized: stats.counter("unauthorized"),
            ctl_requests: stats.counter("ctl_requests"),
            published: stats.counter("published_from_page"),
        };
        let hub = Arc::new(Hub::new(
            config.tail_buffer,
            config.rate_window.as_secs(),
            counters,
            config.token.is_some(),
            ctx.id().to_string(),
        ));
        let mut subs = Vec::new();
        for s in WATCHED {
            subs.push(ctx.bus().subscribe_raw(s).await?);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = App {
            hub: Arc::clone(&hub),
            bus: ctx.bus().clone(),
            id: ctx.id().to_string(),
            auth: crate::auth::Auth::new(
                config.token.clone(),
                config.viewer_token.clone(),
                addr.port(),
            ),
            loopback: addr.ip().is_loopback(),
            stream: ctx.launch().stream.clone(),
            stop: stop_rx.clone(),
        };
        let mut stop_serve = stop_rx.clone();
        self.tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
                let _ = stop_serve.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the web server stopped");
            }
        }));
        let watch_hub = Arc::clone(&hub);
        let mut stop_watch = stop_rx.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut all = select_all(subs);
            loop {
                tokio::select! {
                    _ = stop_watch.wait_for(|s| *s) => break,
                    m = all.next() => match m {
                        Some(m) => watch_hub.saw(&m.subject, &m.payload),
                        None => break,
                    },
                }
            }
        }));
        self.tasks.push(tokio::spawn(poll(
            ctx.bus().clone(),
            hub,
            ctx.health().clone(),
            config.poll_interval,
            stop_rx,
        )));
        self.stop = Some(stop_tx);
        tracing::info!(url = %format!("http://{addr}"), "dashboard on http://{addr}");
        ctx.advertise("dashboard", format!("http://{addr}/"));
        Ok(())
    }

    async fn stop(&mut self, _ctx: &mut Context) -> HandlerResult {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for mut t in self.tasks.drain(..) {
            if tokio::time::timeout(DRAIN, &mut t).await.is_err() {
                t.abort();
            }
        }
        Ok(())
    }
}

/// Ask the daemon for status until stopped; a failure is shown on the
/// page (the banner) and in this operator's health.
async fn poll(
    bus: Bus,
    hub: Arc<Hub>,
    health: HealthReport,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subject = api_subject(methods::STATUS);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let result = if bus.is_connected() {
            bus.request_json::<_, StatusReply>(
                &subject,
                &StatusRequest {},
                every.max(Duration::from_secs(1)),
            )
            .await
            .map_err(|e| format!("the daemon's API did not answer: {e}"))
        } else {
            Err("the bus connection is down; reconnecting".to_owned())
        };
        match result {
            Ok(status) => {
                hub.status(status);
                if health.get().0 != Health::Ok {
                    health.ok();
                }
            }
            Err(e) => {
                health.set(Health::Degraded, e.clone());
                hub.status_failed(e);
            }
        }
    }
}
