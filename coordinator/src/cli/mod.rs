//! The client subcommands (`submit`, `watch`, `status`, `report`, `agents`,
//! `dream`, `promotions`, `bundle`, `export`) and the
//! translation of `serve` flags into a `ServeConfig`.

pub mod args;
mod bundle;
mod client;
mod harden;
mod html;
mod inventory;
mod table;
mod watch;

use std::time::Duration;

use anyhow::Context;
use fleet_common::api::SubmitRun;
use fleet_common::{Budgets, RunId};
use fleet_coordinator::serve::ServeConfig;

use args::{
    AgentCredentialArgs, AgentsArgs, AgentsCommand, DreamArgs, PromotionsCommand, ReportArgs,
    ServeArgs, StatusArgs, SubmitArgs, WatchArgs,
};
pub use bundle::{bundle, export};
pub use client::Rejected;
pub use harden::harden;

/// A usage problem the user fixes by changing flags or environment; the
/// binary exits with status 2 on it, as on a server's 4xx.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

fn required(value: Option<String>, flag: &str, env: &str, hint: &str) -> anyhow::Result<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(Usage(format!("missing {flag}: pass {flag} or set {env} ({hint})")).into()),
    }
}

/// The API token a client subcommand sends (`--token` / FLEET_API_TOKEN).
fn client_token(token: Option<String>) -> anyhow::Result<String> {
    required(
        token,
        "--token",
        "FLEET_API_TOKEN",
        "the coordinator's API token",
    )
}

pub fn serve_config(a: ServeArgs) -> anyhow::Result<ServeConfig> {
    let lease = a.lease.settings().map_err(Usage)?;
    Ok(ServeConfig {
        listen: a.listen,
        database_url: required(
            a.database_url,
            "--database-url",
            "FLEET_DATABASE_URL",
            "e.g. postgres://fleet:fleet@127.0.0.1:55432/fleet",
        )?,
        pg_schema: a.pg_schema.filter(|s| !s.is_empty()),
        redis_url: required(
            a.redis_url,
            "--redis-url",
            "FLEET_REDIS_URL",
            "e.g. redis://127.0.0.1:56379",
        )?,
        advertise_redis_url: a.advertise_redis_url.filter(|s| !s.is_empty()),
        key_prefix: a.key_prefix,
        api_token: required(
            a.api_token,
            "--api-token",
            "FLEET_API_TOKEN",
            "any long random string; clients send it as `Authorization: Bearer <token>`",
        )?,
        agent_token: a.agent_token.unwrap_or_default(),
        skill_packs: a.skill_packs,
        scan_image: a.scan_image,
        lease,
        consumer: a.consumer,
        ingest_workers: a.ingest_workers,
        knowledge_dir: a.knowledge_dir,
        git_secret: required(
            a.git_secret,
            "--git-secret",
            "FLEET_GIT_SECRET",
            "any long random string; agents' git passwords derive from it",
        )?,
        advertise_url: a.advertise_url.filter(|s| !s.is_empty()),
        auto_dream: a.auto_dream,
        auto_bundle_check: a.auto_bundle_check,
        agent_redis_acl: a.agent_redis_acl,
    })
}

pub async fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let token = client_token(a.token)?;
    let mut rules = a.rules;
    if let Some(path) = &a.rules_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        rules.extend(parse_rules(&text));
    }
    let api = client::Api::new(&a.client.api)?;
    if let Some(run) = a.failing_from {
        let failing = harden::still_failing(&api.hosts(RunId(run)).await?);
        if failing.is_empty() {
            eprintln!("harden run {run}: no rule of the bundle still fails on any host");
        }
        rules.extend(failing);
        rules.sort();
        rules.dedup();
        if rules.is_empty() {
            return Ok(());
        }
    }
    // No rules: the coordinator takes every rule of the profile from the
    // pack's SCAP content (and says so when the pack has none).
    let defaults = Budgets::default();
    let req = SubmitRun {
        skill_pack: a.skill_pack,
        profile: a.profile,
        rules,
        budgets: Budgets {
            max_attempts: a.max_attempts.unwrap_or(defaults.max_attempts),
            wall_time_s: a.wall_time_s.unwrap_or(defaults.wall_time_s),
        },
        priority: a.priority.unwrap_or(100),
    };
    let resp = api.submit(&token, &req).await?;
    println!("{}", resp.run);
    if !a.quiet {
        eprintln!("submitted run {} with {} tasks", resp.run, resp.tasks);
    }
    if a.watch {
        watch::watch(&api, resp.run, Duration::from_millis(500)).await?;
    }
    Ok(())
}

/// One rule id per line; `#` starts a comment; blank lines are skipped.
fn parse_rules(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

pub async fn watch(a: WatchArgs) -> anyhow::Result<()> {
    let api = client::Api::new(&a.client.api)?;
    watch::watch(
        &api,
        RunId(a.run),
        Duration::from_millis(a.interval_ms.max(50)),
    )
    .await?;
    Ok(())
}

pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let api = client::Api::new(&a.client.api)?;
    let s = api.run_status(RunId(a.run)).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else if a.summary_line {
        println!("{}", table::fleet_line(&s));
        if let Some(b) = &s.bundle {
            println!("{}", b.line());
        }
    } else {
        print!("{}", table::run_summary(&s));
    }
    Ok(())
}

pub async fn report(a: ReportArgs) -> anyhow::Result<()> {
    let api = client::Api::new(&a.client.api)?;
    let run = RunId(a.run());
    let r = api.run_report(run).await?;
    let hosts = match r.totals.kind.as_str() {
        "learn" => Vec::new(),
        _ => api.hosts(run).await?,
    };
    if let Some(path) = &a.html {
        let history = api.run_history(run).await?;
        std::fs::write(path, html::render(&r, &history, &hosts))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote the report of run {run} to {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", table::report(&r));
        if !hosts.is_empty() {
            print!("\n{}", harden::table(&hosts));
        }
    }
    Ok(())
}

pub async fn agents(a: AgentsArgs) -> anyhow::Result<()> {
    match a.action {
        Some(AgentsCommand::Issue(t)) => return agent_issue(t).await,
        Some(AgentsCommand::Revoke(t)) => return agent_revoke(t).await,
        None => {}
    }
    let api = client::Api::new(&a.client.api)?;
    let list = api.agents().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("no agents");
    } else {
        print!("{}", table::agents(&list));
    }
    Ok(())
}

/// Prints only the token on stdout (for `$(…)`), what it is on stderr.
async fn agent_issue(a: AgentCredentialArgs) -> anyhow::Result<()> {
    let token = client_token(a.token)?;
    let api = client::Api::new(&a.client.api)?;
    let issued = api.issue_agent_token(&token, &a.agent, &a.by).await?;
    eprintln!(
        "agent {}: token {} issued; start the agent with FLEET_AGENT_TOKEN set to it (shown only now)",
        issued.agent, issued.token_id
    );
    println!("{}", issued.token);
    Ok(())
}

async fn agent_revoke(a: AgentCredentialArgs) -> anyhow::Result<()> {
    let token = client_token(a.token)?;
    let api = client::Api::new(&a.client.api)?;
    let r = api.revoke_agent(&token, &a.agent).await?;
    println!(
        "agent {}: {} token(s) revoked, git access refused, redis user {}",
        r.agent,
        r.tokens_revoked,
        if r.redis_user_deleted {
            "deleted (its connections closed)"
        } else {
            "absent"
        }
    );
    Ok(())
}

pub async fn dream(a: DreamArgs) -> anyhow::Result<()> {
    let token = client_token(a.token)?;
    let api = client::Api::new(&a.client.api)?;
    let r = api.dream(&token, RunId(a.run), a.dry_run).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", table::dream(&r));
    }
    Ok(())
}

pub async fn promotions(c: PromotionsCommand) -> anyhow::Result<()> {
    match c {
        PromotionsCommand::List(a) => {
            let api = client::Api::new(&a.client.api)?;
            let list = api.promotions(a.open).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "{}",
                    if a.open {
                        "no open escalations"
                    } else {
                        "the ledger is empty"
                    }
                );
            } else {
                print!("{}", table::promotions(&list));
            }
        }
        PromotionsCommand::Approve(a) | PromotionsCommand::Reject(a) if a.by.trim().is_empty() => {
            return Err(Usage("--by must name who decides".into()).into());
        }
        PromotionsCommand::Approve(a) => decide(a, true).await?,
        PromotionsCommand::Reject(a) => decide(a, false).await?,
    }
    Ok(())
}

async fn decide(a: args::PromotionDecideArgs, approve: bool) -> anyhow::Result<()> {
    let token = client_token(a.token)?;
    let api = client::Api::new(&a.client.api)?;
    let line = api.decide(&token, a.id, approve, &a.by).await?;
    match &line.commit {
        Some(c) => println!(
            "ledger #{}: {} {} (main is now {c})",
            a.id, line.action, line.lesson
        ),
        None => println!("ledger #{}: {} {}", a.id, line.action, line.lesson),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_file_skips_comments_and_blank_lines() {
        let text = "# header\nsshd_a\n\n  audit_b  # trailing\n#c\n";
        assert_eq!(parse_rules(text), vec!["sshd_a", "audit_b"]);
    }
}
