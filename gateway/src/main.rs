//! # strait
//!
//! The command line of the Strait gateway: `strait serve` runs it, `strait token create` mints an
//! access token with a configured API key, `strait config print` shows the effective
//! configuration with secrets redacted.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use strait_gateway::auth::{AccessClaims, ApiKey, Grants, KeyRing, Secret};
use strait_gateway::config::{self, LogFormat, ValidConfig};

/// Strait: a QUIC/WebTransport-first real-time media gateway.
#[derive(Debug, Parser)]
#[command(name = "strait", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from (file, then `STRAIT_SECTION__KEY` variables, then flags).
#[derive(Debug, Clone, Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(short, long, env = "STRAIT_CONFIG")]
    config: Option<PathBuf>,
    /// Override one key: `--set limits.max_sessions=500` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Shortcut for `--set quic.listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    quic_listen: Option<String>,
    /// Shortcut for `--set http.listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Shortcut for `--set webrtc.listen=ADDR` (the WebRTC bridge's UDP port).
    #[arg(long, value_name = "ADDR")]
    webrtc_listen: Option<String>,
    /// An address WebRTC peers reach the bridge at, advertised as a host candidate (repeatable;
    /// together they replace `webrtc.public_ips`).
    #[arg(long = "public-ip", value_name = "IP")]
    public_ips: Vec<std::net::IpAddr>,
    /// Log as JSON lines (shortcut for `--set log.format=json`).
    #[arg(long)]
    json_logs: bool,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<ValidConfig> {
        let mut overrides = Vec::new();
        for s in &self.set {
            overrides.push(config::parse_override(s)?);
        }
        if let Some(a) = &self.quic_listen {
            overrides.push(("quic.listen".into(), a.clone()));
        }
        if let Some(a) = &self.http_listen {
            overrides.push(("http.listen".into(), a.clone()));
        }
        if let Some(a) = &self.webrtc_listen {
            overrides.push(("webrtc.listen".into(), a.clone()));
        }
        if !self.public_ips.is_empty() {
            let ips: Vec<String> = self
                .public_ips
                .iter()
                .map(|ip| format!("\"{ip}\""))
                .collect();
            overrides.push(("webrtc.public_ips".into(), format!("[{}]", ips.join(", "))));
        }
        if self.json_logs {
            overrides.push(("log.format".into(), "\"json\"".into()));
        }
        Ok(config::load_and_validate(
            self.config.as_deref(),
            overrides,
        )?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. With no arguments: a self-signed development certificate, a single node
    /// held in memory, and a development API key printed at start.
    Serve(ConfigArgs),
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint an access token with a configured API key.
    Create {
        /// The room the token grants.
        #[arg(long)]
        room: String,
        /// The participant's identity.
        #[arg(long)]
        identity: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime (`30m`, `1h`, `7d`).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Subscribe only (no publish grant).
        #[arg(long)]
        viewer: bool,
        /// The API key id to sign with (default: the first configured key).
        #[arg(long)]
        key_id: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Print(ConfigArgs),
}

fn init_logging(config: &ValidConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Token(TokenCommand::Create {
            room,
            identity,
            name,
            ttl,
            viewer,
            key_id,
            config,
        }) => {
            let config = config.load()?;
            let Some(first) = config.auth.keys.first() else {
                anyhow::bail!(
                    "no API key is configured (auth.keys); in development mode the gateway \
                     prints its key at start and serves POST /v1/dev/token"
                );
            };
            let id = key_id.unwrap_or_else(|| first.id.clone());
            let mut keys = KeyRing::new();
            for k in &config.auth.keys {
                keys.insert(ApiKey::new(k.id.clone(), Secret::new(k.secret.clone()))?);
            }
            let grants = if viewer {
                Grants::viewer()
            } else {
                Grants::participant()
            };
            let mut claims = AccessClaims::new(identity, room, grants, SystemTime::now(), ttl);
            if let Some(name) = name {
                claims = claims.with_name(name);
            }
            println!("{}", keys.mint(&id, &claims)?);
            Ok(())
        }
        Command::Config(ConfigCommand::Print(args)) => {
            let config = args.load()?;
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
    }
}

fn serve(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    init_logging(&config);
    let files = strait_gateway::raise_open_files_limit(&config);
    if files.now < files.wanted {
        tracing::warn!(
            limit = files.now,
            wanted = files.wanted,
            "the open-files limit is below what http.max_connections, limits.max_sessions and \
             TURN's caps can take at once: raise it (ulimit -n, LimitNOFILE) or lower the caps"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let sockets = strait_gateway::Sockets::bind(&config).with_context(|| {
            format!(
                "binding quic {}, http {} and webrtc {}",
                config.quic.listen, config.http.listen, config.webrtc.listen
            )
        })?;
        let dev_tokens = config.dev_token_endpoint();
        let gateway = strait_gateway::Gateway::start(config, sockets).await?;
        let http = gateway.http_addr;
        eprintln!("strait {} is serving", env!("CARGO_PKG_VERSION"));
        eprintln!("  QUIC / WebTransport  {} (https://{}/rtc)", gateway.quic_addr, gateway.public_quic_authority());
        eprintln!("  HTTP                 http://{http}");
        if let (Some(first), Some(last)) = (gateway.webrtc_addrs.first(), gateway.webrtc_addrs.last()) {
            let ports = if first == last {
                first.to_string()
            } else {
                format!("{first} to port {}", last.port())
            };
            eprintln!("  WebRTC (WHIP/WHEP)   udp {ports}, http://{http}/whip/<room>");
        }
        eprintln!("  certificate sha-256  {}", gateway.cert_fingerprint().to_hex_colon());
        if files.now == files.before {
            eprintln!("  open files limit     {}", files.now);
        } else {
            eprintln!("  open files limit     {} (raised from {})", files.now, files.before);
        }
        let turn = gateway.turn_addrs();
        for (name, addr) in [("UDP", turn.udp), ("TCP", turn.tcp), ("TLS", turn.tls)] {
            if let Some(addr) = addr {
                eprintln!("  TURN {name}             {addr}");
            }
        }
        if let Some(key) = &gateway.dev_key {
            eprintln!("  development mode: API key id {} secret {}", key.id(), key.reveal_secret());
            if dev_tokens {
                eprintln!("  mint a token:        curl -s -X POST http://{http}/v1/dev/token -H 'content-type: application/json' -d '{{\"room\":\"lobby\",\"identity\":\"alice\"}}'");
            } else {
                eprintln!("  POST /v1/dev/token is off: HTTP listens beyond loopback, where it would mint tokens for anyone; configure auth.keys and mint tokens with `strait token create`");
            }
        }
        #[cfg(unix)]
        tokio::spawn(reload_on_sighup(args.clone(), gateway.reloader()));
        wait_for_signal().await;
        tracing::info!("signal received: draining (a second signal exits at once)");
        gateway.begin_shutdown();
        tokio::select! {
            result = gateway.stopped() => result,
            () = wait_for_signal() => {
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    })
}

/// On every SIGHUP: loads the configuration again (file, environment, flags) and applies what can
/// change while running (the TURN secrets); a configuration that does not load changes nothing.
#[cfg(unix)]
async fn reload_on_sighup(args: ConfigArgs, reloader: strait_gateway::Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: the configuration cannot be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        let config = match args.load() {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!("configuration reload refused, nothing changed: {e:#}");
                continue;
            }
        };
        let reload = reloader.reload(&config);
        match reload.turn_secrets {
            Ok(true) => tracing::info!("configuration reloaded: TURN secrets replaced"),
            Ok(false) => tracing::info!("configuration reloaded: TURN secrets unchanged"),
            Err(why) => tracing::warn!("configuration reloaded: TURN secrets kept: {why}"),
        }
        if reload.needs_restart {
            tracing::warn!(
                "configuration reloaded: settings other than the TURN secrets changed; they apply \
                 at the next start"
            );
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
