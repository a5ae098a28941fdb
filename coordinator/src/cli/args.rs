//! Command-line arguments. Every flag has an environment fallback; the
//! precedence is flag > environment > default, and each default is shown
//! by `--help`. Secrets (tokens, URLs with passwords) never echo their
//! environment values in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleet_common::settings::LeaseSettings;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-coordinator",
    version,
    about = "Coordinator of the rule-remediation fleet: HTTP API, planner, lease reaper, event ingester",
    after_help = "Every flag can also be set through the environment variable shown next to it; a flag wins over the environment, which wins over the default."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "FLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator: HTTP API, lease reaper and event ingester.
    Serve(Box<ServeArgs>),
    /// Submit a run; prints its id.
    Submit(SubmitArgs),
    /// Follow a run with a progress bar until it completes, then summarize.
    Watch(WatchArgs),
    /// Show a run's status.
    Status(StatusArgs),
    /// Show a run's report: each rule, then the run's totals.
    ///
    /// Per rule: family, outcome, escalation reason, attempts and wall
    /// time. Totals: fix rate (fixed / (fixed + escalated)), first-try
    /// rate, mean attempts and mean wall time per fixed and per escalated
    /// rule, with the outcome counts and lease protocol counters of
    /// `status`.
    ///
    /// `--html FILE` also writes the report as one self-contained HTML file
    /// (no external scripts, styles or fonts): the totals, a chart of the
    /// fix rate and win:regression ratio across the comparable runs (same
    /// skill pack and profile), outcomes by family, the attempts per rule,
    /// the per-rule table and the rules won or regressed with the lessons
    /// their prompts showed.
    Report(ReportArgs),
    /// List agents and whether they are alive.
    Agents(AgentsArgs),
    /// Run the dream stage over a completed run by hand.
    ///
    /// It runs by itself when a run completes; this reruns it (safe: credit
    /// is recomputed from all data, decided candidates are not decided
    /// again). Steps: compare with the previous comparable run, revert
    /// promotions whose rules regressed, promote candidates through the
    /// gates, recompute credit and publish the ranking. `--dry-run` shows
    /// what would change and changes nothing.
    Dream(DreamArgs),
    /// The promotion ledger: list entries, approve or reject escalations.
    #[command(subcommand)]
    Promotions(PromotionsCommand),
    /// Roll `main`'s bundle of verified fixes out to the hosts of an
    /// inventory, through the agents' leases and SSH sandboxes.
    ///
    /// Per host: snapshot (if configured), health checks, a full-profile
    /// scan, then only the sections whose rules fail there, each followed
    /// by the health checks, then a full-profile scan. A health failure
    /// stops the host, runs its `revert` (if configured) and escalates it.
    /// Every host is probed over SSH (pinned host key) before any host is
    /// touched. `--check` scans and prints what would be applied, changing
    /// nothing. Exits 1 when a host was not hardened.
    Harden(HardenArgs),
    /// Show the bundle of a profile: `main`'s verified skills for its
    /// rules, in the pack's order, each with its provenance.
    ///
    /// Prints one line per section (rule, commit, run, ledger) and a
    /// summary line `bundle: skills=K main=<short commit>`; `--out FILE`
    /// also writes the bundle's JSON, `--json` prints it instead.
    Bundle(BundleArgs),
    /// Export the bundle of a profile as a bash script or an Ansible
    /// playbook, to review and apply elsewhere.
    ///
    /// bash: one script, a section per rule in its own bash process; a
    /// failing section is reported on stderr and the others still run;
    /// exit status 1 when any failed. ansible: one play on `all`, a `raw`
    /// task per rule run by /bin/bash (hosts need no Python), tagged with
    /// the rule id; a failing task fails that host's play.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct HardenArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// API token (required).
    #[arg(long, env = "FLEET_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Inventory: TOML `[[host]]` entries (name, address, host_key, key,
    /// user, port, network, labels, snapshot, revert); see
    /// deploy/inventory.example.toml.
    #[arg(long, value_name = "FILE")]
    pub inventory: PathBuf,
    /// Skill pack whose bundle is rolled out.
    #[arg(
        long,
        env = "FLEET_SKILL_PACK",
        default_value = "ssg-debian11-standard"
    )]
    pub skill_pack: String,
    /// Profile [default: the skill pack's].
    #[arg(long, env = "FLEET_PROFILE")]
    pub profile: Option<String>,
    /// Scan and show what would be applied; change nothing.
    #[arg(long)]
    pub check: bool,
    /// Hosts worked on at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: u32,
    /// No new host starts once more than this share of finished hosts failed.
    #[arg(long, default_value_t = 10)]
    pub max_fail_percent: u32,
    /// The first K hosts must all succeed before any other starts.
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub canary: u32,
    /// Skip the SSH probe of every host before the rollout.
    #[arg(long)]
    pub no_preflight: bool,
    /// Image of the preflight's SSH sandbox.
    #[arg(
        long,
        env = "FLEET_SANDBOX_IMAGE",
        default_value = "fleet-sandbox:bullseye"
    )]
    pub sandbox_image: String,
    /// Print the per-host results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DreamArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// API token (required).
    #[arg(long, env = "FLEET_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The completed run.
    #[arg(long = "run", value_name = "ID")]
    pub run: i64,
    /// Show what would change; write nothing, move no ref.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the DreamReport JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PromotionsCommand {
    /// List ledger entries, newest first.
    List(PromotionsListArgs),
    /// Approve an escalated entry: its file goes onto `main`.
    Approve(PromotionDecideArgs),
    /// Reject an escalated entry.
    Reject(PromotionDecideArgs),
}

#[derive(Debug, Args)]
pub struct PromotionsListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only escalations waiting for an operator.
    #[arg(long)]
    pub open: bool,
    /// Print the JSON list (with every gate's result).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PromotionDecideArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// API token (required).
    #[arg(long, env = "FLEET_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Ledger entry id (from `promotions list --open`).
    pub id: i64,
    /// Who decides, recorded in the ledger [default: $USER].
    #[arg(long, env = "USER", default_value = "operator")]
    pub by: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "FLEET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Postgres URL, e.g. postgres://fleet:fleet@127.0.0.1:55432/fleet (required).
    #[arg(long, env = "FLEET_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Postgres schema to use, created if missing [default: the search path].
    #[arg(long, env = "FLEET_PG_SCHEMA")]
    pub pg_schema: Option<String>,
    /// Redis URL the coordinator uses, e.g. redis://127.0.0.1:56379 (required).
    #[arg(long, env = "FLEET_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis URL handed to agents at registration [default: --redis-url].
    #[arg(long, env = "FLEET_ADVERTISE_REDIS_URL", hide_env_values = true)]
    pub advertise_redis_url: Option<String>,
    /// Prefix of every Redis key of this fleet.
    #[arg(long, env = "FLEET_KEY_PREFIX", default_value = "fleet:")]
    pub key_prefix: String,
    /// Token clients send to submit runs (required).
    #[arg(long, env = "FLEET_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Shared enrollment token: any agent not revoked may register with
    /// it. Leave it unset so that agents register only with their own
    /// tokens (`agents issue`).
    #[arg(long, env = "FLEET_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Directory holding one `<name>/pack.toml` per skill pack.
    #[arg(long, env = "FLEET_SKILL_PACKS", default_value = "skill-packs")]
    pub skill_packs: PathBuf,
    /// Before planning a run of a pack with SCAP content, scan this target
    /// image with the whole profile and record rules that already pass
    /// there as `already_passing` (never leased). Default: off.
    #[arg(long, env = "FLEET_SCAN_IMAGE")]
    pub scan_image: Option<String>,
    #[command(flatten)]
    pub lease: LeaseArgs,
    /// Consumer name in the ingest group: keep it across restarts (a restarted
    /// coordinator re-reads what it had not acknowledged); give each
    /// concurrently running coordinator its own.
    #[arg(long, env = "FLEET_INGEST_CONSUMER", default_value = "coordinator")]
    pub consumer: String,
    /// Ingest batches in flight, each its own consumer (`<consumer>`,
    /// `<consumer>/1`, …): about one per Postgres core.
    #[arg(long, env = "FLEET_INGEST_WORKERS", default_value_t = fleet_coordinator::ingest::DEFAULT_WORKERS)]
    pub ingest_workers: usize,
    /// The knowledge repo (bare git), created from the skill packs if missing
    /// and served to agents under /git/.
    #[arg(long, env = "FLEET_KNOWLEDGE_DIR", default_value = fleet_coordinator::serve::DEFAULT_KNOWLEDGE_DIR)]
    pub knowledge_dir: PathBuf,
    /// Secret from which each agent's git password is derived (required).
    #[arg(long, env = "FLEET_GIT_SECRET", hide_env_values = true)]
    pub git_secret: Option<String>,
    /// Base URL agents reach the coordinator at (for the knowledge repo)
    /// [default: http://<--listen>].
    #[arg(long, env = "FLEET_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Run the dream stage by itself when a run completes; `false`: only by
    /// hand (`fleet-coordinator dream --run ID`).
    #[arg(long, env = "FLEET_AUTO_DREAM", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_dream: bool,
    /// After each learning run's dream stage, check `main`'s bundle as a
    /// whole on a fresh target (a compose task for an agent on real
    /// targets); `false`: only by hand (`bundle --check`).
    #[arg(long, env = "FLEET_AUTO_BUNDLE_CHECK", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_bundle_check: bool,
    /// Give each agent its own Redis ACL user, confined to --key-prefix and
    /// without administrative commands (the coordinator's Redis user must be
    /// allowed ACL SETUSER); `false`: agents get the Redis URL as is.
    #[arg(long, env = "FLEET_AGENT_REDIS_ACL", default_value_t = true, action = clap::ArgAction::Set)]
    pub agent_redis_acl: bool,
}

/// Lease timing handed to agents; see `fleet_common::settings` for why the
/// defaults are what they are.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Lease time-to-live by Redis clock, ms.
    #[arg(long, env = "FLEET_LEASE_TTL_MS", default_value_t = LeaseSettings::default().ttl_ms)]
    pub lease_ttl_ms: u64,
    /// How often agents renew, ms (at most half the TTL).
    #[arg(long, env = "FLEET_RENEW_EVERY_MS", default_value_t = LeaseSettings::default().renew_every_ms)]
    pub renew_every_ms: u64,
    /// Agents stop work when no renewal succeeded for TTL minus this, ms.
    #[arg(long, env = "FLEET_SAFETY_MARGIN_MS", default_value_t = LeaseSettings::default().safety_margin_ms)]
    pub safety_margin_ms: u64,
    /// Lease losses after which a task is escalated as lease_lost.
    #[arg(long, env = "FLEET_LEASE_LOSS_BUDGET", default_value_t = LeaseSettings::default().lease_loss_budget)]
    pub lease_loss_budget: u32,
    /// How often the coordinator reaps expired leases, ms.
    #[arg(long, env = "FLEET_REAP_EVERY_MS", default_value_t = LeaseSettings::default().reap_every_ms)]
    pub reap_every_ms: u64,
}

impl LeaseArgs {
    pub fn settings(&self) -> Result<LeaseSettings, String> {
        let s = LeaseSettings {
            ttl_ms: self.lease_ttl_ms,
            renew_every_ms: self.renew_every_ms,
            safety_margin_ms: self.safety_margin_ms,
            lease_loss_budget: self.lease_loss_budget,
            reap_every_ms: self.reap_every_ms,
            ..LeaseSettings::default()
        };
        s.validate()
            .map_err(|e| format!("invalid lease settings: {e}"))?;
        if s.reap_every_ms == 0 {
            return Err("invalid lease settings: reap_every_ms must be at least 1".into());
        }
        Ok(s)
    }
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the coordinator's API.
    #[arg(long, env = "FLEET_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api: String,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// API token (required).
    #[arg(long, env = "FLEET_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Skill pack name (a directory under the coordinator's --skill-packs).
    #[arg(long, env = "FLEET_SKILL_PACK")]
    pub skill_pack: String,
    /// Profile [default: the skill pack's].
    #[arg(long, env = "FLEET_PROFILE")]
    pub profile: Option<String>,
    /// A rule id; repeat for more. With no --rule and no --rules-file, the
    /// run covers every rule of the profile (packs with SCAP content).
    #[arg(long = "rule", value_name = "RULE")]
    pub rules: Vec<String>,
    /// File with one rule id per line; `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub rules_file: Option<PathBuf>,
    /// Attempts per rule [default: 3].
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Wall time per rule, seconds [default: 600].
    #[arg(long)]
    pub wall_time_s: Option<u32>,
    /// Lower runs first [default: 100].
    #[arg(long)]
    pub priority: Option<u32>,
    /// Learn the rules still failing on the hosts of harden run RUN (added
    /// to --rule and --rules-file).
    #[arg(long, value_name = "RUN")]
    pub failing_from: Option<i64>,
    /// Follow the run until it completes (like `watch`).
    #[arg(long)]
    pub watch: bool,
    /// Print only the run id.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Run id.
    pub run: i64,
    /// Poll interval, ms.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Run id.
    pub run: i64,
    /// Print the RunStatus JSON.
    #[arg(long, conflicts_with = "summary_line")]
    pub json: bool,
    /// Print the one `fleet: run=… fix_rate=…` line (for scripts and logs).
    #[arg(long)]
    pub summary_line: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Rules dead-lettered by the coordinator (lease_lost) have no attempts or wall time and are left out of the means; rules already passing count in neither the rates nor the means."
)]
pub struct ReportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Run id (also accepted as the only argument, as for `status`).
    #[arg(
        long = "run",
        value_name = "ID",
        required_unless_present = "run_arg",
        conflicts_with = "run_arg"
    )]
    pub run: Option<i64>,
    #[arg(value_name = "ID", hide = true)]
    pub run_arg: Option<i64>,
    /// Print the RunReport JSON (`GET /api/v1/runs/{id}/report`).
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML file with charts
    /// (across runs: `GET /api/v1/runs/{id}/history`).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl ReportArgs {
    pub fn run(&self) -> i64 {
        self.run.or(self.run_arg).expect("clap requires a run id")
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentsArgs {
    #[command(subcommand)]
    pub action: Option<AgentsCommand>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print the JSON list.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Issue a token for one agent (printed once, on stdout). The agent
    /// registers with it; it is good for that agent only. Lifts a
    /// revocation of the agent.
    Issue(AgentCredentialArgs),
    /// Revoke every token of an agent, its knowledge-repo access and its
    /// Redis user (closing its connections). Its leases expire and are
    /// handed to other agents.
    Revoke(AgentCredentialArgs),
}

#[derive(Debug, Args)]
pub struct AgentCredentialArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// API token (required).
    #[arg(long, env = "FLEET_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The agent's id.
    pub agent: String,
    /// Who asks, recorded with the token [default: $USER].
    #[arg(long, env = "USER", default_value = "operator")]
    pub by: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_win_over_defaults() {
        let cli = Cli::try_parse_from([
            "fleet-coordinator",
            "serve",
            "--listen",
            "127.0.0.1:9",
            "--lease-loss-budget",
            "2",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.listen.port(), 9);
        assert_eq!(s.lease.settings().unwrap().lease_loss_budget, 2);
    }

    #[test]
    fn report_takes_the_run_as_a_flag_or_an_argument() {
        for argv in [
            &["fleet-coordinator", "report", "--run", "7"][..],
            &["fleet-coordinator", "report", "7", "--json"][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Report(r) = cli.command else {
                panic!("not report")
            };
            assert_eq!(r.run(), 7);
        }
        let cli = Cli::try_parse_from([
            "fleet-coordinator",
            "report",
            "--run",
            "7",
            "--html",
            "r.html",
        ])
        .unwrap();
        let Command::Report(r) = cli.command else {
            panic!("not report")
        };
        assert_eq!(r.html.as_deref(), Some(std::path::Path::new("r.html")));
        assert!(Cli::try_parse_from(["fleet-coordinator", "report"]).is_err());
        assert!(Cli::try_parse_from(["fleet-coordinator", "report", "--run", "7", "8"]).is_err());
    }
}

#[derive(Debug, Args)]
pub struct BundleSource {
    #[command(flatten)]
    pub client: ClientArgs,
    /// API token (required).
    #[arg(long, env = "FLEET_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Skill pack name (a directory under the coordinator's --skill-packs).
    #[arg(long, env = "FLEET_SKILL_PACK")]
    pub skill_pack: String,
    /// Profile [default: the skill pack's].
    #[arg(long, env = "FLEET_PROFILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub source: BundleSource,
    /// Also write the bundle's JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the bundle's JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also check the bundle as a whole on a fresh target (an agent scans
    /// the profile, applies every section in order with health checks,
    /// scans again) and print `bundle: skills=K pass_before=B
    /// pass_after=A interference=I health_failed=H`. Interfering or
    /// health-breaking skills leave the bundle until an operator decides
    /// (`promotions`).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Bash,
    Ansible,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: BundleSource,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}
