//! Rule catalogs of the skill packs' SCAP datastreams, parsed once per file
//! version: the RHEL 9 datastream is 22 MB, and a submission must not wait
//! for it twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fleet_common::skill_pack::SkillPack;
use fleet_common::RuleText;
use fleet_scap::Catalog;

use crate::error::CoordinatorError;

/// File identity a cached catalog was parsed from.
type Stamp = (SystemTime, u64);
type Cache = HashMap<PathBuf, (Stamp, Arc<Catalog>)>;

#[derive(Debug, Clone, Default)]
pub struct Catalogs {
    cache: Arc<Mutex<Cache>>,
}

impl Catalogs {
    /// Short rule ids (without the pack's rule prefix) that `profile`
    /// selects, in benchmark order, with their text; `None` for packs
    /// without SCAP content.
    pub async fn rules(
        &self,
        pack: &SkillPack,
        profile: &str,
    ) -> Result<Option<Vec<(String, RuleText)>>, CoordinatorError> {
        let Some(datastream) = &pack.checks.datastream else {
            return Ok(None);
        };
        let catalog = self.load(Path::new(datastream)).await?;
        let prefix = &pack.checks.rule_prefix;
        let rules = catalog.rules_of(profile).map_err(|e| {
            CoordinatorError::Invalid(format!(
                "profile {profile:?} of skill pack {}: {e}; profiles in {datastream}: {}",
                pack.name,
                catalog
                    .profiles()
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        Ok(Some(
            rules
                .iter()
                .map(|r| {
                    let id =
                        r.id.strip_prefix(prefix.as_str())
                            .unwrap_or(&r.short_id)
                            .to_owned();
                    let text = RuleText {
                        title: r.title.clone(),
                        description: r.description.clone(),
                        rationale: r.rationale.clone(),
                        severity: format!("{:?}", r.severity).to_lowercase(),
                    };
                    (id, text)
                })
                .collect(),
        ))
    }

    async fn load(&self, path: &Path) -> Result<Arc<Catalog>, CoordinatorError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            CoordinatorError::Config(format!(
                "SCAP datastream {} is not readable on the coordinator host ({e}); install the SCAP content (`make deps` installs Debian's ssg-* packages)",
                path.display()
            ))
        })?;
        let stamp = (meta.modified()?, meta.len());
        if let Some((s, c)) = self.cached(path) {
            if s == stamp {
                return Ok(c);
            }
        }
        let owned = path.to_owned();
        let started = std::time::Instant::now();
        let catalog = tokio::task::spawn_blocking(move || Catalog::load(&owned))
            .await
            .map_err(|e| CoordinatorError::WorkerFailed(e.to_string()))?
            .map_err(|e| CoordinatorError::Config(format!("datastream {}: {e}", path.display())))?;
        tracing::info!(datastream = %path.display(), ms = started.elapsed().as_millis() as u64, "rule catalog parsed");
        let catalog = Arc::new(catalog);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_owned(), (stamp, catalog.clone()));
        Ok(catalog)
    }

    fn cached(&self, path: &Path) -> Option<(Stamp, Arc<Catalog>)> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }
}
