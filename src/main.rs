//! The `bearerd` command: `run`, `check`, `healthcheck` and `explain`. Everything else lives in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of `run` when the configuration is invalid (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code of `run` when a listener or the token store cannot be opened (EX_UNAVAILABLE).
const EXIT_START: u8 = 69;

#[derive(Parser)]
#[command(name = "bearerd", version, about = "Egress sidecar that puts OAuth access tokens into outbound API calls")]
struct Cli {
    /// Without one, bearerd runs as an AWS Lambda extension (only where Lambda starts it, with
    /// $AWS_LAMBDA_RUNTIME_API set).
    #[command(subcommand)]
    command: Option<Command>,
    /// Log format: text or json (default: $BEARERD_LOG_FORMAT, else text).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the data plane and the control plane; with $AWS_LAMBDA_RUNTIME_API set, as a Lambda
    /// extension.
    Run {
        /// [default: config/bearerd.yaml; /opt/bearerd/bearerd.yaml as a Lambda extension]
        #[arg(long, env = "BEARERD_CONFIG", conflicts_with = "app")]
        config: Option<PathBuf>,
        /// Serve one FDK app folder without a bearerd.yaml, as `fdk run` does: data plane on
        /// 127.0.0.1:10080, admin (and /custom_configs) on localhost:10001, the store in DIR/.bearerd.
        #[arg(long)]
        app: Option<PathBuf>,
        #[command(flatten)]
        values: AppFlags,
        /// Let templates and token endpoints reach loopback and private addresses (an API or
        /// provider on the developer's own machine).
        #[arg(long, requires = "app")]
        allow_private_ips: bool,
        /// Extra PEM roots for upstream TLS (upstream.ca_file).
        #[arg(long, requires = "app")]
        ca_file: Option<PathBuf>,
        /// The data listener, instead of 127.0.0.1:10080 (another app runs there).
        #[arg(long, requires = "app", value_name = "ADDR")]
        listen: Option<String>,
        /// The admin listener, instead of 127.0.0.1:10001; the redirect URI follows its port.
        #[arg(long, requires = "app", value_name = "ADDR")]
        admin_listen: Option<String>,
    },
    /// Exit 0 when the admin listener's /readyz answers 200 (a container probe without curl).
    Healthcheck {
        #[arg(long, env = "BEARERD_CONFIG", default_value = "config/bearerd.yaml")]
        config: PathBuf,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime_secs)]
        timeout: std::time::Duration,
    },
    /// Which app and template a request would match and what would be sent (no token state;
    /// POST /admin/explain on a running bearerd adds it). Exit 0 on a match, 1 on none.
    Explain {
        #[arg(long, env = "BEARERD_CONFIG", default_value = "config/bearerd.yaml")]
        config: PathBuf,
        /// GET, POST, ...
        method: String,
        /// https://api.example.com/v1/x?y=1
        url: String,
        /// A request header, `name: value` (repeatable).
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The app, when several are configured.
        #[arg(long)]
        app: Option<String>,
        /// The account (x-bearerd-account).
        #[arg(long)]
        account: Option<String>,
        /// The caller (SPEC 2.2) sending it, by name: what that caller would get.
        #[arg(long)]
        caller: Option<String>,
    },
    /// Print the intercept CA certificate (PEM), creating it if it does not exist yet:
    /// applications trust it for HTTPS through CONNECT.
    Ca {
        #[arg(long, env = "BEARERD_CONFIG", default_value = "config/bearerd.yaml")]
        config: PathBuf,
    },
    /// Load and validate everything, print every problem, exit 1 on any.
    Check {
        #[arg(long, env = "BEARERD_CONFIG", default_value = "config/bearerd.yaml", conflicts_with = "app")]
        config: PathBuf,
        /// Check one FDK app folder without a bearerd.yaml.
        #[arg(long)]
        app: Option<PathBuf>,
        #[command(flatten)]
        values: AppFlags,
    },
}

/// The values of one FDK app folder given on the command line (`check --app`, `run --app`).
#[derive(clap::Args)]
struct AppFlags {
    /// An installation parameter value, key=value (repeatable).
    #[arg(long = "iparam", value_name = "K=V", requires = "app")]
    iparams: Vec<String>,
    /// An oauth_iparam value, integration.key=value or key=value for every integration.
    #[arg(long = "oauth-iparam", value_name = "[INTEGRATION.]K=V", requires = "app")]
    oauth_iparams: Vec<String>,
    /// A value for current_host.endpoint_urls.<key>, key=value.
    #[arg(long = "endpoint-url", value_name = "K=V", requires = "app")]
    endpoint_urls: Vec<String>,
    /// Accept http templates and URLs, as upstream.allow_http does.
    #[arg(long, requires = "app")]
    allow_http: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format.or_else(|| std::env::var("BEARERD_LOG_FORMAT").ok());
    let json = match format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            eprintln!("error: BEARERD_LOG_FORMAT={other}: the log format is text or json");
            return ExitCode::from(2);
        }
    };
    init_logging(json);
    let lambda = bearerd::server::lambda::RuntimeApi::from_env();
    let config_or_default = |config: Option<PathBuf>| {
        config.unwrap_or_else(|| {
            PathBuf::from(if lambda.is_some() { bearerd::config::LAMBDA_CONFIG } else { "config/bearerd.yaml" })
        })
    };
    let Some(command) = cli.command else {
        if lambda.is_none() {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            eprintln!("\nerror: a command is needed (bearerd without one is an AWS Lambda extension)");
            return ExitCode::from(2);
        }
        let config = config_or_default(std::env::var_os("BEARERD_CONFIG").map(PathBuf::from));
        return run(bearerd::config::Source::File(config), lambda);
    };
    match command {
        Command::Run { config, app: None, .. } => {
            run(bearerd::config::Source::File(config_or_default(config)), lambda.clone())
        }
        Command::Run { app: Some(dir), values, allow_private_ips, ca_file, listen, admin_listen, .. } => {
            let app_values = match app_values(&values) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let source = bearerd::config::AppSource {
                dir: std::path::absolute(&dir).unwrap_or(dir),
                values: app_values,
                allow_http: values.allow_http,
                allow_private_ips,
                ca_file: ca_file.map(|f| std::path::absolute(&f).unwrap_or(f)),
                listen,
                admin_listen,
            };
            run(bearerd::config::Source::App(Box::new(source)), None)
        }
        Command::Healthcheck { config, timeout } => healthcheck(&config, timeout),
        Command::Ca { config } => {
            let config = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match bearerd::intercept::Authority::open(&config.intercept) {
                Ok(ca) => {
                    print!("{}", ca.cert_pem());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Explain { config, method, url, headers, app, account, caller } => {
            let config = match load_or_report(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut map = std::collections::BTreeMap::new();
            for h in &headers {
                let Some((name, value)) = h.split_once(':') else {
                    eprintln!("error: -H {h}: a header is `name: value`");
                    return ExitCode::from(2);
                };
                map.insert(name.trim().to_string(), value.trim().to_string());
            }
            let req = bearerd::admin::explain::ExplainRequest { method, url, headers: map, app, account, caller };
            let answer = bearerd::admin::explain::offline(config, &req);
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            if answer["matched"] == true { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Command::Check { config, app: None, .. } => match bearerd::config::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                let n: usize = c.apps.iter().map(|a| a.fdk.templates.len()).sum();
                println!("{}: OK ({} apps, {n} templates)", config.display(), c.apps.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("error: {e}");
                }
                eprintln!("{}: {} problem(s)", config.display(), errors.0.len());
                ExitCode::from(1)
            }
        },
        Command::Check { app: Some(dir), values, .. } => check_app(&dir, &values),
    }
}

/// The configuration at `path`, or every problem printed and the exit code for them.
fn load_or_report(path: &std::path::Path) -> Result<bearerd::config::Config, ExitCode> {
    bearerd::config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Directives of `RUST_LOG` that name a log target without a level (`RUST_LOG=verbose`): valid,
/// but they turn on that target alone, which silences bearerd's own logs.
fn bare_targets(rust_log: &str) -> Vec<&str> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    rust_log
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('=') && !d.contains('['))
        .filter(|d| !LEVELS.iter().any(|l| d.eq_ignore_ascii_case(l)) && !d.starts_with("bearerd"))
        .collect()
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    for target in bare_targets(&rust_log) {
        eprintln!(
            "warning: RUST_LOG: `{target}` is a log target, not a level, so only that target logs; levels are trace, debug, info, warn, error and off (RUST_LOG=debug, or RUST_LOG=bearerd=debug)"
        );
    }
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(e) => {
            if !rust_log.is_empty() {
                eprintln!("warning: RUST_LOG={rust_log} is not understood ({e}); logging at info");
            }
            EnvFilter::new("info")
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Serves until a signal, or as a Lambda extension (`lambda`) until Lambda's `SHUTDOWN`.
fn run(source: bearerd::config::Source, lambda: Option<bearerd::server::lambda::RuntimeApi>) -> ExitCode {
    use bearerd::server::lambda;
    // Pinned to one CPU (the affinity mask tokio would size its pool from; a sidecar's usual
    // quota): one thread without work stealing, measurably cheaper per request. Otherwise one
    // worker per CPU.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_START);
        }
    };
    let name = lambda::own_name();
    // A start that fails is reported to Lambda too, so that the function's init fails with it.
    let failed = |code: u8, error_type: &str, message: String| {
        if let Some(api) = lambda.clone() {
            rt.block_on(lambda::fail_init(api, &name, error_type, &message));
        }
        ExitCode::from(code)
    };
    let shown = match &source {
        bearerd::config::Source::File(p) => p.display().to_string(),
        bearerd::config::Source::App(a) => a.dir.display().to_string(),
    };
    // The values saved through /custom_configs complete the configuration.
    let saved = match bearerd::token::settings::Settings::of(&source).read() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("the saved installation values: {e}; not starting");
            return failed(EXIT_CONFIG, "Extension.ConfigInvalid", format!("the saved installation values: {e}"));
        }
    };
    let config = match bearerd::config::load_source(&source, &saved) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!("{shown}: {} problem(s); not starting", errors.0.len());
            let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            let message = format!("{shown}: {} problem(s): {}", all.len(), all.join("; "));
            return failed(EXIT_CONFIG, "Extension.ConfigInvalid", message);
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    for app in config.apps.iter().filter(|a| !a.missing.is_empty()) {
        tracing::warn!(
            app = %app.name,
            "not configured yet: {}; enter them at {}/custom_configs",
            app.missing.join(", "),
            config.admin.public_url
        );
    }
    let (extension, extension_name) = (lambda.clone(), name.clone());
    let started = rt.block_on(async move {
        // Signal handlers first: a SIGHUP or SIGTERM that arrives while starting must not take
        // the default action (terminating the process).
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = signals else {
            return Err("cannot install signal handlers".to_string());
        };
        let running = bearerd::server::start(config).await.map_err(|e| format!("cannot start: {e}"))?;
        let reloader = running.reloader.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = reloader.reload("SIGHUP").await;
            }
        });
        if let Some(api) = extension {
            return Ok(ExitCode::from(lambda::serve(api, &extension_name, running, term, int).await));
        }
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // The sequence of `Running::shutdown`; a second signal ends it at once.
        tokio::select! {
            () = running.shutdown() => tracing::info!("stopped"),
            _ = term.recv() => tracing::warn!("a second signal: stopping without waiting"),
            _ = int.recv() => tracing::warn!("a second signal: stopping without waiting"),
        }
        Ok(ExitCode::SUCCESS)
    });
    match started {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            failed(EXIT_START, "Extension.StartFailed", e)
        }
    }
}

/// A duration such as `2s` or `500ms` (the syntax of bearerd.yaml).
fn humantime_secs(s: &str) -> Result<std::time::Duration, String> {
    bearerd::config::parse_duration(s)
}

/// `GET /readyz` on the admin listener of `config` (its address read from the file alone; an
/// unspecified address is asked on loopback): 0 on 200, 1 otherwise, with the reason.
fn healthcheck(config: &std::path::Path, timeout: std::time::Duration) -> ExitCode {
    use std::io::{Read as _, Write as _};
    let mut addr = match bearerd::config::admin_listen(config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            return ExitCode::from(1);
        }
    };
    if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr =
            if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        addr.set_ip(loopback);
    }
    let ask = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        s.take(4096).read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string())
    };
    match ask() {
        Ok(status) if status.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("unhealthy: {addr}/readyz answered `{status}`");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("unhealthy: {addr}/readyz: {e}");
            ExitCode::from(1)
        }
    }
}

fn split_kv(s: &str) -> Option<(&str, &str)> {
    s.split_once('=').filter(|(k, _)| !k.is_empty())
}

/// The values the command line gives an app folder; exit code 2 for a malformed one.
fn app_values(flags: &AppFlags) -> Result<bearerd::config::AppValues, ExitCode> {
    let mut values = bearerd::config::AppValues::default();
    for kv in &flags.iparams {
        let Some((k, v)) = split_kv(kv) else {
            eprintln!("error: --iparam {kv}: expected key=value");
            return Err(ExitCode::from(2));
        };
        values.iparams.insert(k.into(), v.into());
    }
    for kv in &flags.oauth_iparams {
        let Some((k, v)) = split_kv(kv) else {
            eprintln!("error: --oauth-iparam {kv}: expected [integration.]key=value");
            return Err(ExitCode::from(2));
        };
        match k.split_once('.') {
            Some((integration, key)) => {
                values.oauth_iparams_by_integration.entry(integration.into()).or_default().insert(key.into(), v.into());
            }
            None => {
                values.oauth_iparams.insert(k.into(), v.into());
            }
        }
    }
    for kv in &flags.endpoint_urls {
        let Some((k, v)) = split_kv(kv) else {
            eprintln!("error: --endpoint-url {kv}: expected key=value");
            return Err(ExitCode::from(2));
        };
        values.endpoint_urls.insert(k.into(), bearerd::config::endpoint_host(v));
    }
    Ok(values)
}

fn check_app(dir: &std::path::Path, flags: &AppFlags) -> ExitCode {
    let values = match app_values(flags) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let upstream = bearerd::config::UpstreamConfig { allow_http: flags.allow_http, ..Default::default() };
    let (app, d) = bearerd::config::load_app_only(dir, &values, &upstream);
    for w in &d.warnings {
        eprintln!("warning: {w}");
    }
    if !d.errors.is_empty() {
        for e in &d.errors {
            eprintln!("error: {e}");
        }
        eprintln!("{}: {} problem(s)", dir.display(), d.errors.len());
        return ExitCode::from(1);
    }
    println!("{}: OK", dir.display());
    println!("platform version: {}", app.platform_version.as_deref().unwrap_or("unknown"));
    println!("integrations: {}", app.integrations.len());
    for i in &app.integrations {
        let grant = match i.grant {
            bearerd::config::Grant::AuthorizationCode => "authorization_code",
            bearerd::config::Grant::ClientCredentials => "client_credentials",
        };
        println!("  {} ({}, {grant})", i.name, if i.agent { "agent" } else { "account" });
    }
    println!("templates: {}", app.templates.len());
    for t in &app.templates {
        let integration = t.integration.map_or("-".to_string(), |i| app.integrations[i].name.clone());
        let host = t.host.as_literal().unwrap_or("<from context>");
        let ctx = t.context_keys();
        println!("  {} {} {host} integration={integration} context=[{}]", t.name, t.method, ctx.join(", "));
    }
    ExitCode::SUCCESS
}
