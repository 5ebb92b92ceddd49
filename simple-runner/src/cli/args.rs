//! The command line of `simple-runner`: its commands and their arguments, read into
//! the runner's [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use conveyor_sdk::Config;
use simple_runner::settings::files::{FileSettings, DEFAULT_ARTIFACT_MAX_SIZE, DEFAULT_CACHE_MAX_SIZE};
use simple_runner::settings::registry::RegistryAuth;
use simple_runner::settings::secrets::Secrets;
use simple_runner::settings::{DEFAULT_MAX_LOG_BYTES, DEFAULT_PIDS_LIMIT, DEFAULT_WARM_IMAGES};
use simple_runner::spec::ByteSize;
use simple_runner::{ContainerSettings, Settings, WarmSettings, DRIVER_NAME};

#[derive(Parser)]
#[command(
    name = "simple-runner",
    version,
    about = "The reference Conveyor CI driver: command steps in Docker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Serve as a driver: take runs from the Conveyor server's NATS until SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Run one resource (JSON, as for `POST /resources/`) here, without any server, and
    /// exit with 0 if it succeeded.
    Run {
        /// The resource file.
        file: PathBuf,
        /// The driver name on the run's container (labelled a local run: the sweeps of
        /// serving runners never remove it).
        #[arg(long, env = "CONVEYOR_DRIVER_NAME", default_value = DRIVER_NAME)]
        name: String,
        #[command(flatten)]
        runner: RunnerArgs,
        // Where the run keeps its artifacts (and caches): without a NATS server (no
        // `--nats-url`, no `CONVEYOR_NATS_URL`), a run that has artifacts to keep fails.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Fetch what runs kept: their artifacts, from the NATS object store.
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// Print the resource definition the driver registers.
    Schema,
}

/// What `artifact` does.
#[derive(Subcommand)]
pub enum ArtifactCommand {
    /// Write an artifact of a run: a tar of its paths, named from the workspace's
    /// root, so that `simple-runner artifact get RUN NAME | tar x` lays them out as
    /// they were.
    Get {
        /// The run's id.
        run_id: String,
        /// The artifact's name, as in the spec.
        #[arg(value_name = "NAME")]
        artifact: String,
        /// The file the tar is written to (default: standard output, never a
        /// terminal).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the artifacts of a run: name, size in bytes, SHA-256 and when it was kept.
    List {
        /// The run's id.
        run_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where artifacts are: which driver's, on which NATS.
#[derive(Args)]
pub struct StoreArgs {
    /// The driver name the run was taken by.
    #[arg(long, env = "CONVEYOR_DRIVER_NAME", default_value = DRIVER_NAME)]
    pub name: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// The NATS server a command talks to, and how: the same flags for every command.
#[derive(Args)]
pub struct NatsArgs {
    /// The NATS server of the Conveyor server; for a NATS cluster, its servers as a
    /// comma-separated list or one flag each. Default `nats://127.0.0.1:4222`; for
    /// `run`, none: a local run keeps artifacts only when given one.
    #[arg(long, env = "CONVEYOR_NATS_URL", value_delimiter = ',', value_name = "URL")]
    pub nats_url: Vec<String>,
    /// The root CA (PEM) the NATS server is verified against; `serve` verifies an
    /// `https://` API server against it too (besides the system's root CAs) unless
    /// `--api-ca` is given.
    #[arg(long, env = "CONVEYOR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This runner's certificate chain (PEM, leaf first): mutual TLS with NATS, and,
    /// for `serve`, signed tokens for the API server.
    #[arg(long, env = "CONVEYOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "CONVEYOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A NATS credentials file (JWT and NKey seed).
    #[arg(long, env = "CONVEYOR_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A NATS token.
    #[arg(long, env = "CONVEYOR_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
}

/// The NATS server of `serve` and `artifact` when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl NatsArgs {
    /// The servers given, else [`DEFAULT_NATS_URL`].
    pub fn urls(&self) -> Vec<String> {
        match self.nats_url.is_empty() {
            true => vec![DEFAULT_NATS_URL.to_owned()],
            false => self.nats_url.clone(),
        }
    }

    /// Whether a server was given (flag or environment).
    pub fn given(&self) -> bool {
        !self.nats_url.is_empty()
    }

    /// The runtime's configuration of these servers, credentials and TLS.
    pub fn config(&self) -> Config {
        let mut config = Config::default().nats_urls(self.urls());
        if let Some(ca) = &self.tls_ca {
            config = config.nats_root_ca(ca);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.nats_client_certificate(cert, key);
        }
        if let Some(creds) = &self.nats_creds {
            config = config.nats_credentials_file(creds);
        }
        if let Some(token) = &self.nats_token {
            config = config.nats_token(token);
        }
        config
    }

    /// A JetStream context on a connection of its own to these servers, tried once;
    /// why not.
    pub async fn connect(&self) -> Result<async_nats::jetstream::Context, String> {
        let config = self.config();
        use conveyor_sdk::error_text;
        let servers = config.nats_servers().map_err(|e| error_text(&e))?;
        let options = config.nats_connect_options().await.map_err(|e| error_text(&e))?;
        let client = options
            .connect(servers)
            .await
            .map_err(|e| format!("cannot reach NATS at {}: {}", self.urls().join(","), error_text(&e)))?;
        Ok(async_nats::jetstream::new(client))
    }
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The Conveyor API server, where the resource definition is registered.
    #[arg(long, env = "CONVEYOR_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,
    /// How many runs at once.
    #[arg(long, env = "CONVEYOR_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// The driver name: consumer, subjects, and the `driver` of logs and results.
    #[arg(long, env = "CONVEYOR_DRIVER_NAME", default_value = DRIVER_NAME)]
    pub name: String,
    /// On shutdown, how long runs in progress may go on before they are stopped.
    #[arg(long, env = "CONVEYOR_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// The root CA (PEM) the API server alone is verified against, besides the
    /// system's; for the API server it takes the place of `--tls-ca`.
    #[arg(long, env = "CONVEYOR_API_CA")]
    pub api_ca: Option<PathBuf>,
    /// Serve `/healthz`, `/readyz` and `/metrics` (Prometheus) over HTTP on this
    /// address, e.g. `127.0.0.1:9090`; off when not given.
    #[arg(long, env = "CONVEYOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The format of the runner's own diagnostics on stderr: `text`, or `json` (one
    /// object per line; lines of a run carry its span: driver, run id, resource).
    #[arg(long, env = "CONVEYOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long this runner's liveness record lasts without being written again: its
    /// containers are removed by another replica once it has been gone that long. The
    /// TTL of an existing liveness bucket wins over this one.
    #[arg(long, env = "CONVEYOR_LIVENESS_TTL", default_value = "30s", value_parser = parse_liveness_ttl)]
    pub liveness_ttl: Duration,
    /// How often this runner sweeps for containers of runners that are gone.
    #[arg(long, env = "CONVEYOR_SWEEP_INTERVAL", default_value = "30s", value_parser = parse_sweep_interval)]
    pub sweep_interval: Duration,
    /// Warm containers kept ready per image (and settings) run recently: a run that
    /// finds one ready starts without waiting for a container to start. One is enough
    /// unless runs of the same image come faster than a container starts; each costs
    /// an idle shell. 0: none, every run starts cold.
    #[arg(long, env = "CONVEYOR_WARM", default_value_t = 1)]
    pub warm: usize,
    /// The most images (with their settings) kept warm at once; past it the least
    /// recently run one's warm containers are removed.
    #[arg(long, env = "CONVEYOR_WARM_IMAGES", default_value_t = DEFAULT_WARM_IMAGES, value_parser = parse_warm_images)]
    pub warm_images: usize,
    /// An image (with its settings) not run for this long has its warm containers
    /// removed.
    #[arg(long, env = "CONVEYOR_WARM_IDLE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub warm_idle: Duration,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

impl ServeArgs {
    /// The warm containers asked for.
    pub fn warm(&self) -> WarmSettings {
        WarmSettings { per_image: self.warm, max_images: self.warm_images, idle: self.warm_idle }
    }

    /// The root CA of the API server: `--api-ca`, else `--tls-ca`.
    pub fn api_root_ca(&self) -> Option<PathBuf> {
        self.api_ca.clone().or_else(|| self.nats.tls_ca.clone())
    }
}

/// How diagnostics are written.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What the operator decides, not a resource.
#[derive(Args)]
pub struct RunnerArgs {
    /// The network of run containers: `none` (no network), `bridge`, or a network's
    /// name.
    #[arg(long, env = "CONVEYOR_NETWORK", default_value = "none")]
    pub network: String,
    /// The memory limit of a run whose spec sets none, e.g. `512m` or `2g`.
    #[arg(long, env = "CONVEYOR_MEMORY", value_parser = parse_bytes)]
    pub memory: Option<i64>,
    /// The CPU limit of a run whose spec sets none, e.g. `1.5`.
    #[arg(long, env = "CONVEYOR_CPUS", value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// The process limit of a run whose spec sets none.
    #[arg(long, env = "CONVEYOR_PIDS", default_value_t = DEFAULT_PIDS_LIMIT, value_parser = clap::value_parser!(i64).range(1..))]
    pub pids: i64,
    /// The most memory a spec may ask for, e.g. `4g`; also the limit of a run that
    /// sets none when `--memory` is not given.
    #[arg(long, env = "CONVEYOR_MAX_MEMORY", value_parser = parse_bytes)]
    pub max_memory: Option<i64>,
    /// The most CPUs a spec may ask for.
    #[arg(long, env = "CONVEYOR_MAX_CPUS", value_parser = parse_cpus)]
    pub max_cpus: Option<f64>,
    /// The most processes a spec may ask for.
    #[arg(long, env = "CONVEYOR_MAX_PIDS", value_parser = clap::value_parser!(i64).range(1..))]
    pub max_pids: Option<i64>,
    /// The user steps run as (`uid[:gid]` or a user of the image); default: the image's.
    #[arg(long, env = "CONVEYOR_USER")]
    pub user: Option<String>,
    /// Run containers with a read-only root filesystem (`/tmp` is a tmpfs).
    #[arg(long, env = "CONVEYOR_READ_ONLY")]
    pub read_only: bool,
    /// A secret resources may name: its value is this variable of the runner's own
    /// environment. Once per secret.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// A file of secrets resources may name, one `NAME=VALUE` per line.
    #[arg(long, env = "CONVEYOR_SECRETS_FILE", value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// A Docker `config.json` whose `auths` hold the registry credentials for pulls.
    #[arg(long, env = "CONVEYOR_DOCKER_CONFIG", value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// The most bytes of step output one run logs, e.g. `16m`; past it, output is
    /// dropped with one line saying so.
    #[arg(long, env = "CONVEYOR_MAX_LOG_BYTES", default_value_t = ByteSize::new(DEFAULT_MAX_LOG_BYTES), value_parser = parse_size)]
    pub max_log_bytes: ByteSize,
    /// The timeout of a run whose spec sets none, and the most a spec may set, e.g.
    /// `30m`: image pull, container start and steps.
    #[arg(long, alias = "default-timeout", env = "CONVEYOR_RUN_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub run_timeout: Duration,
    /// The image of a run whose spec names none.
    #[arg(long, env = "CONVEYOR_DEFAULT_IMAGE")]
    pub default_image: Option<String>,
    /// A file of git credentials in git's credential-store format
    /// (`https://user:token@host` per line) for the checkouts of a resource's `source`.
    #[arg(long, env = "CONVEYOR_GIT_CREDENTIALS", value_name = "FILE")]
    pub git_credentials: Option<PathBuf>,
    /// The most bytes one cache entry may hold, e.g. `2g`; a bigger one is not saved.
    #[arg(long, env = "CONVEYOR_CACHE_MAX_SIZE", default_value_t = ByteSize::new(DEFAULT_CACHE_MAX_SIZE), value_parser = parse_size)]
    pub cache_max_size: ByteSize,
    /// How long a cache entry is kept after it is saved, e.g. `7d`.
    #[arg(long, env = "CONVEYOR_CACHE_TTL", default_value = "7days", value_parser = humantime::parse_duration)]
    pub cache_ttl: Duration,
    /// How long a run's artifacts are kept, e.g. `7d`.
    #[arg(long, env = "CONVEYOR_ARTIFACT_TTL", default_value = "7days", value_parser = humantime::parse_duration)]
    pub artifact_ttl: Duration,
    /// The most bytes of artifacts one run may keep, e.g. `1g`; past it the run fails.
    #[arg(long, env = "CONVEYOR_ARTIFACT_MAX_SIZE", default_value_t = ByteSize::new(DEFAULT_ARTIFACT_MAX_SIZE), value_parser = parse_size)]
    pub artifact_max_size: ByteSize,
}

impl RunnerArgs {
    /// The settings, with the secrets and registry credentials read.
    pub fn settings(&self, name: &str) -> Result<Settings, String> {
        let mut secrets = Secrets::default();
        if let Some(file) = &self.secrets_file {
            secrets = secrets.with_file(file).map_err(|e| conveyor_sdk::error_text(&e))?;
        }
        for secret in &self.secrets {
            secrets = secrets.with_env_var(secret).map_err(|e| conveyor_sdk::error_text(&e))?;
        }
        let registry_auth = match &self.docker_config {
            Some(file) => RegistryAuth::from_file(file)
                .map_err(|e| format!("{}: {}", file.display(), conveyor_sdk::error_text(&e)))?,
            None => RegistryAuth::default(),
        };
        Ok(Settings {
            name: name.to_owned(),
            container: ContainerSettings {
                network: self.network.clone(),
                memory_bytes: self.memory,
                cpus: self.cpus,
                pids_limit: self.pids,
                max_memory_bytes: self.max_memory,
                max_cpus: self.max_cpus,
                max_pids: self.max_pids,
                user: self.user.clone(),
                read_only: self.read_only,
                ..ContainerSettings::default()
            },
            run_timeout: self.run_timeout,
            default_image: self.default_image.clone(),
            secrets,
            max_log_bytes: self.max_log_bytes.bytes(),
            registry_auth,
            files: FileSettings {
                git_credentials: self.git_credentials.clone(),
                cache_max_size: self.cache_max_size.bytes(),
                cache_ttl: self.cache_ttl,
                artifact_ttl: self.artifact_ttl,
                artifact_max_size: self.artifact_max_size.bytes(),
            },
            ..Settings::default()
        })
    }
}

fn parse_liveness_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if ttl < Duration::from_secs(1) {
        return Err(format!("{text} is too short: the liveness TTL is at least 1s"));
    }
    Ok(ttl)
}

fn parse_sweep_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if interval < Duration::from_millis(100) {
        return Err(format!("{text} is too short: sweeps are at least 100ms apart"));
    }
    Ok(interval)
}

fn parse_warm_images(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(images) if images > 0 => Ok(images),
        _ => Err(format!("not a number of images above zero: {text:?}")),
    }
}

fn parse_size(text: &str) -> Result<ByteSize, String> {
    text.parse()
}

fn parse_bytes(text: &str) -> Result<i64, String> {
    let size: ByteSize = text.parse()?;
    i64::try_from(size.bytes()).map_err(|_| format!("size too large: {text:?}"))
}

fn parse_cpus(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(cpus) if cpus.is_finite() && cpus > 0.0 => Ok(cpus),
        _ => Err(format!("not a number of CPUs above zero: {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpus_parse() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_cpus("1.5"), Ok(1.5));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("NaN").is_err());
    }

    #[test]
    fn containers_get_no_network_and_documented_limits_by_default() {
        let args = serve_args(&[]);
        let settings = args.runner.settings("d").unwrap();
        if std::env::var_os("CONVEYOR_NETWORK").is_none() {
            assert_eq!(settings.container.network, "none");
        }
        assert_eq!(settings.container.pids_limit, DEFAULT_PIDS_LIMIT);
        assert_eq!(settings.max_log_bytes, 16 << 20);
        let capped = serve_args(&["--max-memory", "1g", "--max-pids", "50", "--read-only", "--user", "1000"]);
        let settings = capped.runner.settings("d").unwrap();
        assert_eq!(settings.container.max_memory_bytes, Some(1 << 30));
        assert_eq!(settings.container.max_pids, Some(50));
        assert!(settings.container.read_only);
        assert_eq!(settings.container.user.as_deref(), Some("1000"));
    }

    #[test]
    fn serving_keeps_one_warm_container_per_image_unless_told_otherwise() {
        if std::env::var_os("CONVEYOR_WARM").is_none() {
            let warm = serve_args(&[]).warm();
            assert_eq!((warm.per_image, warm.max_images, warm.idle), (1, 4, Duration::from_secs(600)));
        }
        let warm = serve_args(&["--warm", "2", "--warm-images", "8", "--warm-idle", "90s"]).warm();
        assert_eq!((warm.per_image, warm.max_images, warm.idle), (2, 8, Duration::from_secs(90)));
        assert_eq!(serve_args(&["--warm", "0"]).warm().per_image, 0);
        let argv = ["simple-runner", "serve", "--warm-images", "0"];
        assert!(Cli::try_parse_from(argv).is_err(), "at least one image");
    }

    #[test]
    fn a_secret_missing_from_the_environment_is_an_error_naming_it() {
        let args = serve_args(&["--secret", "CONVEYOR_TEST_SURELY_UNSET_SECRET"]);
        let error = args.runner.settings("d").unwrap_err();
        assert!(error.contains("CONVEYOR_TEST_SURELY_UNSET_SECRET"), "{error}");
    }

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let argv = ["simple-runner", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Serve(args)) => *args,
            Ok(_) => panic!("not parsed as serve"),
            Err(error) => panic!("{error}"),
        }
    }

    fn nats_urls_of(args: &[&str]) -> Vec<String> {
        serve_args(args).nats.urls()
    }

    #[test]
    fn tls_ca_verifies_the_api_server_too_unless_api_ca_names_its_own() {
        let both = serve_args(&["--tls-ca", "ca.pem"]);
        assert_eq!(both.api_root_ca(), Some(PathBuf::from("ca.pem")));
        assert_eq!(both.nats.tls_ca, Some(PathBuf::from("ca.pem")));
        let own = serve_args(&["--tls-ca", "ca.pem", "--api-ca", "api-ca.pem"]);
        assert_eq!(own.api_root_ca(), Some(PathBuf::from("api-ca.pem")));
        assert_eq!(own.nats.tls_ca, Some(PathBuf::from("ca.pem")), "NATS keeps --tls-ca");
        let api_only = serve_args(&["--api-ca", "api-ca.pem"]);
        assert_eq!((api_only.api_root_ca(), api_only.nats.tls_ca), (Some(PathBuf::from("api-ca.pem")), None));
        assert_eq!(serve_args(&[]).api_root_ca(), None);
    }

    #[test]
    fn nats_url_takes_a_comma_separated_list() {
        assert_eq!(
            nats_urls_of(&["--nats-url", "nats://a:4222,nats://b:4222,nats://c:4222"]),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
    }

    #[test]
    fn nats_url_may_be_repeated_and_mixed_with_lists() {
        assert_eq!(
            nats_urls_of(&["--nats-url", "nats://a:4222", "--nats-url=nats://b:4222,nats://c:4222"]),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
    }

    #[test]
    fn nats_url_defaults_to_the_local_server() {
        if std::env::var_os("CONVEYOR_NATS_URL").is_none() {
            assert_eq!(nats_urls_of(&[]), ["nats://127.0.0.1:4222"]);
        }
    }

    #[test]
    fn liveness_ttl_and_sweep_interval_default_to_30s_and_refuse_what_is_too_short() {
        if std::env::var_os("CONVEYOR_LIVENESS_TTL").is_none()
            && std::env::var_os("CONVEYOR_SWEEP_INTERVAL").is_none()
        {
            let defaults = serve_args(&[]);
            assert_eq!(
                (defaults.liveness_ttl, defaults.sweep_interval),
                (Duration::from_secs(30), Duration::from_secs(30))
            );
        }
        let set = serve_args(&["--liveness-ttl", "3s", "--sweep-interval", "500ms"]);
        assert_eq!(
            (set.liveness_ttl, set.sweep_interval),
            (Duration::from_secs(3), Duration::from_millis(500))
        );
        let refused =
            |flags: &[&str]| Cli::try_parse_from(["simple-runner", "serve"].iter().chain(flags)).is_err();
        assert!(refused(&["--liveness-ttl", "500ms"]));
        assert!(refused(&["--sweep-interval", "0s"]));
        assert!(refused(&["--liveness-ttl", "soon"]));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
