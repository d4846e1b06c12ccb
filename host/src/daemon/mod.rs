//! `rolegate serve`: the daemon — store, providers, expiry, exporters, the HTTP server — and
//! its reactions to SIGHUP and SIGTERM.

pub(crate) mod quickstart;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use rolegate::config::Config;
use rolegate::plugins::Providers;

use crate::runtime;

pub(crate) fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    let config = Config::load(config_path)?;
    if let Some(refusal) = config.server.listen_refusal() {
        anyhow::bail!("{}: {refusal}", config_path.display());
    }
    // The certificate and key are checked before anything opens: a wrong file names itself.
    let tls = match config.server.tls() {
        Some((cert, key)) => Some(Arc::new(rolegate::http::tls::ServerTls::load(
            cert,
            key,
            config.server.client_certs(),
            jiff::Timestamp::now(),
        )?)),
        None => None,
    };
    let metrics_token = config.server.metrics_token()?;
    // The port before the store: a busy port must fail before a new store is created and its
    // first admin token printed (a token printed by a daemon that then fails is lost).
    let std_listener = std::net::TcpListener::bind(&config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    std_listener.set_nonblocking(true)?;
    rolegate::model::metrics::METRICS.started(jiff::Timestamp::now().as_second());
    let rt = runtime()?;
    // Opened before anything else too; its writer is a thread of its own.
    let access_log = match &config.server.access_log {
        Some(path) => Some(rolegate::http::access::AccessLog::open(path)?),
        None => None,
    };
    let served = rt.block_on(async move {
        let now = jiff::Timestamp::now().as_millisecond();
        // Blocking (PostgreSQL connects and migrates): off the runtime's threads.
        let store_config = config.store.clone();
        let store = Arc::new(
            tokio::task::spawn_blocking(move || rolegate::store::Store::open(&store_config, now))
                .await??,
        );
        let key = Arc::new(rolegate::store::secrets::SealingKey::load_or_create(&config.store.key_file)?);
        {
            let key = Arc::clone(&key);
            store
                .write(move |tx| rolegate::store::secrets::check_key(tx, &key))
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.store.key_file.display()))?;
        }
        // The chain's anchors: checkpoints signed with a key derived from the key file's.
        let anchor_file = Arc::new(rolegate::records::anchor::AnchorFile::new(
            config.events.anchor_path(&config.store.key_file),
            rolegate::records::anchor::AnchorKey::derive(&key)?,
        ));
        let anchors = {
            let file = Arc::clone(&anchor_file);
            tokio::task::spawn_blocking(move || file.prepare().and_then(|()| file.read())).await??
        };
        let anchor_path = anchor_file.path().display().to_string();
        if !anchors.unreadable().is_empty() {
            tracing::warn!(
                file = %anchor_path,
                lines = ?anchors.unreadable(),
                "lines of the anchor file are no checkpoint (a write cut short by a crash, or not rolegate's); they are set aside"
            );
        }
        // A tail cut (or a chain rewritten) while the daemon was down is said and recorded,
        // not a refusal to start: an admin must be able to investigate.
        let problems = {
            let anchors = anchors.clone();
            store
                .read(move |tx| rolegate::records::anchor::check_end(tx, &anchors))
                .await?
        };
        // The cut is said once here, not again when the anchorer first sees the lower head.
        let found_cut = !problems.is_empty();
        for problem in problems {
            tracing::error!(
                file = %anchor_path,
                "the event log failed its anchor check: {problem}; `rolegate events verify` reports it"
            );
            let at = jiff::Timestamp::now().as_millisecond();
            store
                .write(move |tx| {
                    let ev = rolegate::records::events::NewEvent::new(
                        rolegate::records::events::ANCHOR_MISMATCH,
                        rolegate::records::events::Severity::Error,
                        "monitoring",
                        format!("the event log failed its anchor check at start: {problem}"),
                    );
                    rolegate::records::events::append(tx, ev, at)
                })
                .await?;
        }
        let anchorer = Arc::new(tokio::sync::Mutex::new(rolegate::records::anchor::Anchorer::new(
            Arc::clone(&anchor_file),
            anchors.newest().filter(|_| !found_cut),
        )));
        let (crash_tx, mut crash_rx) =
            tokio::sync::mpsc::unbounded_channel::<rolegate::plugins::process::WorkerNews>();
        let providers = match Providers::load_observed(&config.plugins, &config.providers, Some(crash_tx)).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let message = e.to_string();
                let provider = e.provider_id().map(String::from);
                let _ = store
                    .write(move |tx| {
                        let mut ev = rolegate::records::events::NewEvent::new(
                            rolegate::records::events::PROVIDER_REFUSED,
                            rolegate::records::events::Severity::Error,
                            "plugins",
                            message,
                        );
                        ev.provider = provider;
                        rolegate::records::events::append(tx, ev, now)
                    })
                    .await;
                store.close();
                return Err(e.into());
            }
        };
        for p in providers.iter() {
            let message = format!(
                "{} ({}, sha256 {}, {})",
                p.plugin.library.display(),
                p.info().map(|i| i.name.as_str()).unwrap_or(""),
                p.plugin.sha256,
                p.plugin.isolation
            );
            let id = p.id().to_string();
            store
                .write(move |tx| {
                    let mut ev = rolegate::records::events::NewEvent::new(
                        rolegate::records::events::PROVIDER_LOADED,
                        rolegate::records::events::Severity::Information,
                        "plugins",
                        message,
                    );
                    ev.provider = Some(id);
                    rolegate::records::events::append(tx, ev, now)
                })
                .await?;
        }
        // Retired and retiring providers, and the roles they would leave without MFA.
        let sunsets: Vec<(String, jiff::Timestamp)> = providers
            .iter()
            .filter_map(|p| Some((p.id().to_string(), p.sunset()?)))
            .collect();
        if !sunsets.is_empty() {
            let roles = store.read(rolegate::records::roles::list).await?;
            for warning in rolegate::records::roles::sunset_warnings(&roles, &sunsets, jiff::Timestamp::now()) {
                tracing::warn!("{warning}");
            }
        }
        {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                while let Some(news) = crash_rx.recv().await {
                    use rolegate::plugins::process::WorkerNews;
                    let at = jiff::Timestamp::now().as_millisecond();
                    let (event, id, message) = match news {
                        WorkerNews::Ended { id, status } => (
                            rolegate::records::events::PROVIDER_CRASHED,
                            id,
                            format!("the worker process {status}"),
                        ),
                        WorkerNews::Refused { id, reason } => (
                            rolegate::records::events::PROVIDER_REFUSED,
                            id,
                            format!("a new worker was refused while the daemon runs: {reason}"),
                        ),
                    };
                    let written = store
                        .write(move |tx| {
                            let mut ev = rolegate::records::events::NewEvent::new(
                                event,
                                rolegate::records::events::Severity::Error,
                                "plugins",
                                message,
                            );
                            ev.provider = Some(id);
                            rolegate::records::events::append(tx, ev, at)
                        })
                        .await;
                    if let Err(e) = written {
                        tracing::error!(error = %e, "cannot record a provider crash");
                    }
                }
            });
        }
        let p = &config.policy;
        let settings = rolegate::service::Settings {
            default_country_code: p.default_country_code,
            max_wrong_answers: p.max_wrong_answers,
            lockout_threshold: p.lockout_threshold,
            lockout_duration: jiff::SignedDuration::from_secs(p.lockout_s),
            approval_timeout: jiff::SignedDuration::from_secs(p.approval_timeout_s),
            requests_per_minute: p.requests_per_minute,
            limits: config.limits,
            ..Default::default()
        };
        let service = Arc::new(rolegate::service::Service::new(
            Arc::clone(&store),
            providers,
            Arc::new(rolegate::model::clock::SystemClock),
            key,
            settings,
        ));
        // Activations that ended while the host was down end now.
        let ended = service.expire_due().await?;
        if ended > 0 {
            tracing::info!(ended, "ended what was due while the host was down");
        }
        // Counted and issued in one transaction: of several instances starting at once on
        // one PostgreSQL database, one issues the first token.
        let first = store
            .write(move |tx| {
                if rolegate::records::tokens::count(tx)? > 0 {
                    return Ok(None);
                }
                rolegate::records::tokens::issue(tx, "admin", true, "first admin", now).map(Some)
            })
            .await?;
        if let Some(token) = first {
            eprintln!(
                "rolegate: first start. The admin token (shown once, keep it secret):\n\n    export ROLEGATE_TOKEN={token}\n"
            );
        }
        if let Some(directory) = config.directory.clone()
            && directory.monitor_interval_s > 0
        {
            let store = Arc::clone(&store);
            let cc = config.policy.default_country_code;
            let every = Duration::from_secs(directory.monitor_interval_s);
            let directory = Arc::new(directory);
            tokio::spawn(async move {
                let mut reported = std::collections::HashMap::new();
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = rolegate::records::directory::monitor_once(&store, Arc::clone(&directory), cc, &mut reported).await {
                        tracing::warn!(error = %e, "the directory monitor could not compare phone numbers");
                    }
                }
            });
        }
        let expirer = Arc::clone(&service);
        let expiring = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = expirer.expire_due().await {
                    tracing::error!(error = %e, "expiry failed");
                }
            }
        });
        if let Some(path) = config.events.jsonl.clone() {
            let mut sink = rolegate::records::events::JsonLinesSink::open(&path)?;
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    let last = sink.last();
                    let batch = store
                        .read_long(move |tx| rolegate::records::events::after(tx, last, 1000))
                        .await;
                    let result = batch.and_then(|b| {
                        let n = b.len();
                        sink.export(&b).map(|_| n)
                    });
                    match result {
                        Ok(1000) => tick.reset_immediately(),
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "event export failed; retrying"),
                    }
                }
            });
        }
        // Anchors the head every interval in which it moved (see docs/events.md).
        let anchoring = {
            let anchorer = Arc::clone(&anchorer);
            let store = Arc::clone(&store);
            let every = Duration::from_millis(config.events.anchor_interval_ms);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    tick.tick().await;
                    let now = jiff::Timestamp::now().as_millisecond();
                    match anchorer.lock().await.tick(&store, now).await {
                        Ok(_) => failing = false,
                        // Said once per failing spell, not every interval.
                        Err(e) if !failing => {
                            tracing::error!(error = %e, "cannot anchor the event chain; retrying");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let serving_on = format!(
            "rolegate: serving on {scheme}://{} (web page at /, OpenAPI at /openapi.json, metrics at /metrics); Ctrl-C or SIGTERM stops",
            listener.local_addr()?
        );
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        let app = rolegate::http::api::Api::new(service)
            .with_anchors(Some(Arc::clone(&anchor_file)))
            .with_directory(config.directory.clone())
            .with_metrics_token(metrics_token.as_deref())
            .router();
        let limits = config.server.limits();
        raise_open_files(limits.max_connections);
        // Ctrl-C, or SIGTERM as systemd and container runtimes send: stop accepting, let the
        // requests in progress finish, then close the store cleanly.
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot listen for SIGINT")?;
        // Said only once SIGHUP, SIGTERM and SIGINT are handled: a reload or a stop sent as
        // soon as it reads "serving" (systemd, a test) must not meet a signal's default action.
        eprintln!("{serving_on}");
        on_hangup(hangup, tls.clone(), access_log.clone());
        let stop = async move {
            let signal = tokio::select! {
                _ = interrupt.recv() => "interrupt",
                _ = terminate.recv() => "SIGTERM",
            };
            eprintln!("rolegate: stopping ({signal}): finishing the requests in progress");
        };
        let serving = rolegate::http::server::Serving {
            limits,
            tls,
            access_log: access_log.clone(),
        };
        rolegate::http::server::serve(listener, app, serving, stop).await;
        if let Some(log) = access_log {
            log.flush(Duration::from_secs(2));
        }
        // The last events anchored, and that checkpoint copied to the log, before the store
        // closes; the expiry sweep stopped first (after the close it could only fail, and a
        // clean shutdown logs no error).
        expiring.abort();
        anchoring.abort();
        {
            let mut anchorer = anchorer.lock().await;
            let now = jiff::Timestamp::now().as_millisecond();
            if let Err(e) = anchorer.tick(&store, now).await {
                tracing::error!(error = %e, "cannot anchor the event chain at shutdown");
            }
            anchorer.mirror();
        }
        store.close();
        eprintln!("rolegate: stopped");
        anyhow::Ok(())
    });
    // An in-process provider call that hung past its deadline must not hold up the exit.
    rt.shutdown_timeout(Duration::from_secs(5));
    served?;
    Ok(ExitCode::SUCCESS)
}

/// What SIGHUP (`systemctl reload rolegate`, a certificate renewal hook, logrotate) does: the
/// TLS certificate and key are read again, and the access log is opened again. Says which
/// certificate HTTPS is served with, and warns twice a day while it nears its end. Without
/// either, SIGHUP reloads nothing and is said to — it never stops the daemon (systemd's
/// `ExecReload` sends it, and a gate stopped by a reload would stay down: systemd counts a
/// death by SIGHUP as a clean exit). `hup` listens from before the daemon says it serves.
pub(crate) fn on_hangup(
    mut hup: tokio::signal::unix::Signal,
    tls: Option<std::sync::Arc<rolegate::http::tls::ServerTls>>,
    access_log: Option<rolegate::http::access::AccessLog>,
) {
    use rolegate::http::tls::EXPIRY_WARNING;
    let file = tls
        .as_ref()
        .map(|t| t.cert_path().display().to_string())
        .unwrap_or_default();
    let summary = tls.as_ref().and_then(|t| t.summary());
    if let Some(s) = &summary {
        eprintln!("rolegate: TLS with {s} ({file})");
    }
    if tls.as_ref().is_some_and(|t| t.asks_client_certs()) {
        eprintln!(
            "rolegate: clients must present a certificate from [server] tls_client_ca (mutual TLS)"
        );
    }
    let near_end = move |s: &rolegate::http::tls::CertSummary| {
        let left = jiff::Timestamp::now().duration_until(s.not_after);
        if left < EXPIRY_WARNING {
            tracing::warn!(
                certificate = %s.subject,
                not_after = %s.not_after,
                file = %file,
                "the TLS certificate ends in less than 14 days: renew it, then send SIGHUP"
            );
        }
    };
    if let Some(s) = &summary {
        near_end(s);
    }
    if let Some(log) = &access_log {
        eprintln!("rolegate: access log {}", log.path().display());
    }
    let mut twice_a_day = tokio::time::interval(Duration::from_secs(12 * 3600));
    twice_a_day.reset();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        break;
                    }
                    if tls.is_none() && access_log.is_none() {
                        let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("rolegate: SIGHUP: nothing to reload (no TLS, no access log)\n"));
                        continue;
                    }
                    if let Some(log) = &access_log {
                        log.reopen();
                    }
                    let Some(tls) = &tls else { continue };
                    match tls.reload(jiff::Timestamp::now()) {
                        Ok(s) => {
                            // A lifecycle line like the others (a closed stderr is no reason to panic).
                            let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("rolegate: TLS reloaded: {s}\n"));
                            near_end(&s);
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "TLS reload refused: new handshakes keep the certificate in use"
                        ),
                    }
                }
                _ = twice_a_day.tick() => {
                    if let Some(s) = tls.as_ref().and_then(|t| t.summary()) {
                        near_end(&s);
                    }
                }
            }
        }
    });
}

/// Raises the soft limit on open files as far as `max_connections` clients (each a file
/// descriptor) need beside the store's and plugins' files — within the hard limit, no further —
/// and warns when the hard limit is too low for them.
pub(crate) fn raise_open_files(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    // Room for the store, the plugins' workers and the log besides the clients.
    let needed = max_connections as u64 + 256;
    if lim.rlim_cur < needed {
        let raised = libc::rlimit {
            rlim_cur: needed.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            needed,
            "the open-file limit is below [server] max_connections + 256: connections beyond it will fail to be accepted; raise LimitNOFILE or lower max_connections"
        );
    }
}
