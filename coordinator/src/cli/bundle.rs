//! `bundle` (DESIGN H2) and `export` (H6): both fetch the bundle from the
//! coordinator; `export` renders it here with the pure renderers of
//! `fleet_coordinator::bundle`.

use std::path::Path;

use anyhow::Context;
use fleet_common::bundle::Bundle;
use fleet_common::host::SubmitCompose;
use fleet_coordinator::bundle::{render_ansible, render_bash, short_commit};

use super::args::{BundleArgs, BundleSource, ExportArgs, ExportFormat};
use super::{client, client_token};

const GENERATED_BY: &str = concat!("fleet-coordinator ", env!("CARGO_PKG_VERSION"), " export");

async fn fetch(source: &BundleSource) -> anyhow::Result<Bundle> {
    let token = client_token(source.token.clone())?;
    let api = client::Api::new(&source.client.api)?;
    api.bundle(&token, &source.skill_pack, source.profile.as_deref())
        .await
}

pub async fn bundle(a: BundleArgs) -> anyhow::Result<()> {
    let bundle = fetch(&a.source).await?;
    if let Some(path) = &a.out {
        write(path, &serde_json::to_vec_pretty(&bundle)?)?;
        eprintln!("wrote the bundle to {}", path.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&bundle)?);
    } else {
        print!("{}", table(&bundle));
    }
    if a.check {
        check(&a.source).await?;
    }
    Ok(())
}

/// Submits the composition check (H3), waits for it, prints its figures.
async fn check(source: &BundleSource) -> anyhow::Result<()> {
    let token = client_token(source.token.clone())?;
    let api = client::Api::new(&source.client.api)?;
    let req = SubmitCompose {
        skill_pack: source.skill_pack.clone(),
        profile: source.profile.clone(),
    };
    let submitted = api.check_bundle(&token, &req).await?;
    eprintln!(
        "bundle: checking {} skill(s) as a whole on a fresh target (run {}): two full-profile scans and every section",
        submitted.skills, submitted.run
    );
    let status = super::watch::wait_quietly(&api, submitted.run).await?;
    let rows = api.hosts(submitted.run).await?;
    if let Some(report) = rows.first().and_then(|r| r.report.as_ref()) {
        for i in &report.interference {
            let by = i.broken_by.as_deref().unwrap_or("an undetermined section");
            println!(
                "interference: {} fails after the bundle (broken by {by})",
                i.rule
            );
        }
        for s in report
            .sections
            .iter()
            .filter(|s| !s.health_failed.is_empty())
        {
            println!(
                "health_failed: {} broke {}",
                s.rule,
                s.health_failed.join(", ")
            );
        }
    }
    match status.bundle {
        Some(b) => println!("{}", b.line()),
        None => anyhow::bail!(
            "the composition check (run {}) ended without a report: {:?}",
            submitted.run,
            status.escalated_by_reason
        ),
    }
    Ok(())
}

pub async fn export(a: ExportArgs) -> anyhow::Result<()> {
    let bundle = fetch(&a.source).await?;
    let text = match a.format {
        ExportFormat::Bash => render_bash(&bundle, GENERATED_BY)?,
        ExportFormat::Ansible => render_ansible(&bundle, GENERATED_BY)?,
    };
    match &a.out {
        Some(path) => {
            write(path, text.as_bytes())?;
            eprintln!(
                "wrote {} sections of {} {} to {}",
                bundle.sections.len(),
                bundle.skill_pack,
                bundle.profile,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// One line per section, then `bundle: skills=K main=<short commit>`.
fn table(b: &Bundle) -> String {
    let width = b
        .sections
        .iter()
        .map(|s| s.rule.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    if !b.sections.is_empty() {
        out.push_str(&format!(
            "{:<width$}  commit        run    ledger\n",
            "rule"
        ));
    }
    for s in &b.sections {
        let p = &s.provenance;
        let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
        out.push_str(&format!(
            "{:<width$}  {:<12}  {:<5}  {}\n",
            s.rule,
            short_commit(&p.commit),
            opt(p.run),
            opt(p.ledger)
        ));
    }
    out.push_str(&format!(
        "bundle: skills={} main={}\n",
        b.sections.len(),
        short_commit(&b.main_commit)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::bundle::{BundleSection, SkillProvenance};

    #[test]
    fn the_table_names_each_section_and_ends_with_the_summary() {
        let b = Bundle {
            skill_pack: "p".into(),
            profile: "x".into(),
            main_commit: "0123456789abcdef0123".into(),
            sections: vec![BundleSection {
                rule: "package_cron_installed".into(),
                title: "Install cron".into(),
                script: "true".into(),
                provenance: SkillProvenance {
                    commit: "abcdef0123456789".into(),
                    blob: "b".into(),
                    run: Some(3),
                    ledger: None,
                },
            }],
        };
        let t = table(&b);
        assert!(
            t.contains("package_cron_installed  abcdef012345  3      -\n"),
            "{t}"
        );
        assert!(t.ends_with("bundle: skills=1 main=0123456789ab\n"), "{t}");
    }
}
