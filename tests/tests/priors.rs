//! DESIGN D2 across families (issue 20): a brand-new lesson of a family
//! nobody has data on never outranks a lesson proven in another family, in
//! any prompt. Proven: shown in a prompt with a published score at least
//! its family's prior (it beats its family's baseline).
//!
//! Property-style, in process: many random histories, credited by the
//! dream stage's `credit::compute`, published by its `ranking_of`, and every
//! prompt picked by the agent's own `Guidance::select`; then many random
//! ranking files as agents could find them (older ones without a pack
//! prior, hand-edited ones).

use std::collections::{BTreeMap, BTreeSet};

use fleet_agent::remediation::Guidance;
use fleet_common::{RuleTask, RunId, TaskId};
use fleet_coordinator::dream::credit::{self, Trial};
use fleet_coordinator::dream::ranking_of;
use fleet_knowledge::{LessonFile, LessonKind, Provenance, RankedLesson, Ranking};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NEW_FAMILY: &str = "brand_new";

fn task(family: &str, rule: &str) -> RuleTask {
    RuleTask {
        run: RunId(1),
        task: TaskId(1),
        rule: rule.into(),
        family: family.into(),
        skill_pack: "p".into(),
        profile: "x".into(),
        budgets: Default::default(),
        checks: Default::default(),
        rule_text: None,
        job: None,
    }
}

fn file(family: &str, id: &str) -> LessonFile {
    LessonFile {
        id: id.into(),
        kind: LessonKind::Lesson,
        family: family.into(),
        scope: "family".into(),
        pattern: None,
        provenance: Provenance {
            run: "1".into(),
            attempt: 1,
            agent: "a".into(),
            source_commit: None,
            merged: Vec::new(),
        },
        body: format!("what {id} says\n"),
    }
}

/// The lowest score a lesson proven in a family other than `NEW_FAMILY`
/// gets in any prompt of its rules, if any is proven.
fn lowest_proven(
    ranking: &Ranking,
    files: &BTreeMap<String, Vec<LessonFile>>,
    rules: &BTreeMap<String, BTreeSet<String>>,
) -> Option<f64> {
    let mut lowest: Option<f64> = None;
    for (family, lessons) in files.iter().filter(|(f, _)| *f != NEW_FAMILY) {
        let Some(prior) = ranking.priors.get(family) else {
            continue;
        };
        for rule in rules.get(family).into_iter().flatten() {
            let g = Guidance::select(&task(family, rule), ranking, lessons.clone());
            for r in g.refs().into_iter().filter(|r| r.score >= *prior) {
                lowest = Some(lowest.map_or(r.score, |l| l.min(r.score)));
            }
        }
    }
    lowest
}

/// The scores `NEW_FAMILY`'s fresh lessons get in their prompt.
fn new_lesson_scores(ranking: &Ranking, fresh: &[LessonFile]) -> Vec<f64> {
    let g = Guidance::select(&task(NEW_FAMILY, "brand_new_rule"), ranking, fresh.to_vec());
    assert_eq!(g.lessons.len(), fresh.len().min(5));
    g.refs().into_iter().map(|r| r.score).collect()
}

#[test]
fn a_new_familys_lessons_never_outrank_a_lesson_proven_elsewhere_after_a_dream_pass() {
    let mut proven_seen = 0;
    for seed in 0..300 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut trials = Vec::new();
        let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in 0..rng.random_range(1..6) {
            let family = format!("fam{f}");
            // Families from hopeless to easy; lessons from harmful to keys.
            let base = rng.random_range(0.0..1.0);
            let lift: Vec<f64> = (0..8).map(|_| rng.random_range(-0.5..0.6)).collect();
            for _ in 0..rng.random_range(1..120) {
                let rule = format!("{family}_r{}", rng.random_range(0..3));
                let shown: Vec<usize> = (0..rng.random_range(0..4))
                    .map(|_| rng.random_range(0..8))
                    .collect();
                let p = shown.iter().fold(base, |p, l| p + lift[*l]).clamp(0.0, 1.0);
                trials.push(Trial {
                    rule: rule.clone(),
                    family: family.clone(),
                    won: rng.random_bool(p),
                    shown: shown.iter().map(|l| format!("{family}-l{l}")).collect(),
                });
                rules.entry(family.clone()).or_default().insert(rule);
            }
            known
                .entry(family.clone())
                .or_default()
                .extend((0..8).map(|l| format!("{family}-l{l}")));
        }
        let fresh: Vec<LessonFile> = (0..rng.random_range(1..7))
            .map(|i| file(NEW_FAMILY, &format!("fresh-{i}")))
            .collect();
        let files: BTreeMap<String, Vec<LessonFile>> = known
            .iter()
            .map(|(f, ids)| (f.clone(), ids.iter().map(|id| file(f, id)).collect()))
            .collect();

        // The new family on `main` when the dream stage ran (it has no
        // attempt, so the pack prior), and promoted after it (absent from
        // the ranking: the agent's fallback).
        let mut with_new = known.clone();
        with_new.insert(
            NEW_FAMILY.into(),
            fresh.iter().map(|f| f.id.clone()).collect(),
        );
        for known in [&with_new, &known] {
            let ranking = ranking_of(&credit::compute(&trials, known), known);
            let Some(lowest) = lowest_proven(&ranking, &files, &rules) else {
                continue;
            };
            proven_seen += 1;
            for score in new_lesson_scores(&ranking, &fresh) {
                assert!(
                    score <= lowest,
                    "seed {seed}: new lesson at {score} above a proven one at {lowest}: {ranking:?}"
                );
            }
        }
    }
    // The property was exercised, not vacuous.
    assert!(proven_seen > 300, "{proven_seen}");
}

#[test]
fn a_new_familys_lessons_never_outrank_a_proven_lesson_whatever_the_ranking_file_says() {
    for seed in 0..2000 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ranking = Ranking::default();
        let mut files: BTreeMap<String, Vec<LessonFile>> = BTreeMap::new();
        let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in 0..rng.random_range(1..5) {
            let family = format!("fam{f}");
            // Sometimes a family with lessons but no prior (hand-edited).
            if rng.random_bool(0.9) {
                ranking
                    .priors
                    .insert(family.clone(), rng.random_range(0.0..1.0));
            }
            for l in 0..rng.random_range(1..7) {
                let id = format!("{family}-l{l}");
                if rng.random_bool(0.8) {
                    ranking.lessons.push(RankedLesson {
                        family: family.clone(),
                        rule: rng
                            .random_bool(0.2)
                            .then(|| format!("{family}_r{}", rng.random_range(0..2))),
                        id: id.clone(),
                        score: rng.random_range(0.02..1.0),
                    });
                }
                files
                    .entry(family.clone())
                    .or_default()
                    .push(file(&family, &id));
            }
            rules
                .entry(family.clone())
                .or_default()
                .extend((0..2).map(|r| format!("{family}_r{r}")));
        }
        // Older files have no pack prior; a newer one may have any.
        ranking.pack_prior = rng.random_bool(0.6).then(|| rng.random_range(0.0..1.0));
        let fresh: Vec<LessonFile> = (0..rng.random_range(1..4))
            .map(|i| file(NEW_FAMILY, &format!("fresh-{i}")))
            .collect();
        let Some(lowest) = lowest_proven(&ranking, &files, &rules) else {
            continue;
        };
        for score in new_lesson_scores(&ranking, &fresh) {
            assert!(
                score <= lowest,
                "seed {seed}: new lesson at {score} above a proven one at {lowest}: {ranking:?}"
            );
        }
    }
}
