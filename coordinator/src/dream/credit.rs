//! Credit assignment (DESIGN D1, D2, D4): how much each lesson helps the
//! rules of its family, from what was actually in each prompt (E4).
//!
//! The model is Beta-Bernoulli. An attempt is a trial; it is won when the
//! Evaluator passed the rule and the target stayed healthy. For a lesson
//! `l` of family `f`:
//!
//! - the **baseline** is the family's win rate on attempts whose prompt did
//!   *not* show `l`, smoothed: `m = (wins + 1) / (attempts + 2)`;
//! - the **prior** is `Beta(m·K, (1−m)·K)`, a belief worth `K` attempts that
//!   the lesson changes nothing;
//! - the **score** is the posterior mean of the win rate when `l` is shown:
//!   `(m·K + wins_shown) / (K + shown)`, never below [`SCORE_FLOOR`] (D4).
//!
//! A lesson with no data scores its family's baseline (D2) — the same number
//! published as the family's prior for lessons not yet scored. A lesson
//! that helps scores above it, one that hurts below it. Where one rule has
//! shown a lesson at least [`MIN_RULE_SHOWN`] times, a per-(rule, lesson)
//! score is computed the same way with the family-level score as its prior.
//!
//! A family without a single attempt has no baseline of its own: it gets
//! the **pack prior** ([`Credit::pack_prior`]), every family's attempts
//! pooled but capped at the lowest family baseline, so its new lessons
//! never outrank a lesson proven in another family (D2). A neutral 0.5 did,
//! in every family whose rules fail more often than not.
//!
//! Only counts matter ([`Tallies`]): the dream stage counts in Postgres
//! what [`Tallies::of`] counts here, and both feed [`compute_from`].
//! Everything is recomputed from all attempts every time (D1): the same
//! data always gives the same credit, so running it twice changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Prior strength in attempts: a lesson needs a few attempts of evidence
/// before its score moves far from its family's baseline.
pub const PRIOR_STRENGTH: f64 = 4.0;
/// Demote, never zero (D4): a lesson that looked harmful can come back.
pub const SCORE_FLOOR: f64 = 0.02;
/// Attempts of one rule that showed a lesson before it gets a per-rule score.
pub const MIN_RULE_SHOWN: u64 = 5;

/// One evaluated attempt, as credit sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub rule: String,
    pub family: String,
    pub won: bool,
    /// Lesson ids in the attempt's prompt (its `PromptAssembled`).
    pub shown: Vec<String>,
}

/// Win counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub trials: u64,
    pub wins: u64,
}

impl Tally {
    fn add(&mut self, won: bool) {
        self.trials += 1;
        self.wins += u64::from(won);
    }

    fn merge(&mut self, other: Tally) {
        self.trials += other.trials;
        self.wins += other.wins;
    }

    /// `self` less the trials of `part` (a subset of them).
    fn without(self, part: Tally) -> Tally {
        Tally {
            trials: self.trials.saturating_sub(part.trials),
            wins: self.wins.saturating_sub(part.wins),
        }
    }

    /// Laplace-smoothed win rate.
    pub fn smoothed_rate(&self) -> f64 {
        (self.wins as f64 + 1.0) / (self.trials as f64 + 2.0)
    }
}

/// Everything credit needs of the trials: counts per family and per
/// (family, rule, lesson). Small (one entry per pair, not per attempt), so
/// it can be counted where the attempts are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Per family: all its trials.
    pub families: BTreeMap<String, Tally>,
    /// Per (family, rule, lesson): the rule's trials whose prompt showed the
    /// lesson, each prompt counted once however often it listed the id.
    pub shown: BTreeMap<(String, String, String), Tally>,
}

impl Tallies {
    pub fn of(trials: &[Trial]) -> Tallies {
        let mut t = Tallies::default();
        for trial in trials {
            t.families
                .entry(trial.family.clone())
                .or_default()
                .add(trial.won);
            // A prompt lists each lesson once; a duplicate id would count twice.
            let ids: BTreeSet<&str> = trial.shown.iter().map(String::as_str).collect();
            for id in ids {
                let key = (trial.family.clone(), trial.rule.clone(), id.to_owned());
                t.shown.entry(key).or_default().add(trial.won);
            }
        }
        t
    }
}

/// The credit of one lesson in one family, or for one rule of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LessonCredit {
    pub family: String,
    /// `None`: the family-level row.
    pub rule: Option<String>,
    pub lesson: String,
    pub shown: u64,
    pub wins: u64,
    pub alpha: f64,
    pub beta: f64,
    pub score: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credit {
    /// Per family: the baseline a lesson without data inherits (D2).
    pub priors: BTreeMap<String, f64>,
    /// The prior of a family without a single trial ([`pack_prior`]);
    /// `None` while no family has one.
    pub pack_prior: Option<f64>,
    /// Family-level rows first, each family's lessons best first; then the
    /// per-rule rows.
    pub lessons: Vec<LessonCredit>,
}

impl Credit {
    /// The family-level score of `lesson` in `family`.
    pub fn score(&self, family: &str, lesson: &str) -> Option<f64> {
        self.lessons
            .iter()
            .find(|c| c.rule.is_none() && c.family == family && c.lesson == lesson)
            .map(|c| c.score)
    }
}

/// The row of `lesson` shown `shown` times: a Beta posterior with prior
/// mean `m` and strength [`PRIOR_STRENGTH`], scored at least the floor.
fn posterior(family: &str, rule: Option<&str>, lesson: &str, m: f64, shown: Tally) -> LessonCredit {
    let alpha = m * PRIOR_STRENGTH + shown.wins as f64;
    let beta = (1.0 - m) * PRIOR_STRENGTH + (shown.trials - shown.wins) as f64;
    LessonCredit {
        family: family.to_owned(),
        rule: rule.map(str::to_owned),
        lesson: lesson.to_owned(),
        shown: shown.trials,
        wins: shown.wins,
        alpha,
        beta,
        score: (alpha / (alpha + beta)).max(SCORE_FLOOR),
    }
}

/// The prior of a family without a single trial: every family's trials
/// pooled as one, but never above the lowest baseline of a family with
/// trials. A family nobody has data on is taken to be no easier than the
/// hardest one that has: a lesson that beats its own family's baseline, in
/// any family, then scores at least this. `None` without any trial:
/// nothing is proven yet, so nothing can be outranked.
pub fn pack_prior(families: &BTreeMap<String, Tally>) -> Option<f64> {
    let mut pooled = Tally::default();
    let mut lowest = f64::INFINITY;
    for t in families.values().filter(|t| t.trials > 0) {
        pooled.merge(*t);
        lowest = lowest.min(t.smoothed_rate());
    }
    (pooled.trials > 0).then(|| pooled.smoothed_rate().min(lowest))
}

/// Credit for every lesson of `known` (family → lesson ids, e.g. what is on
/// `main` and the candidates) from every trial. A lesson that never showed
/// up gets its family's prior.
pub fn compute(trials: &[Trial], known: &BTreeMap<String, BTreeSet<String>>) -> Credit {
    compute_from(&Tallies::of(trials), known)
}

/// [`compute`] from the trials' counts.
pub fn compute_from(t: &Tallies, known: &BTreeMap<String, BTreeSet<String>>) -> Credit {
    // A lesson's family-level count: its count summed over the family's rules.
    let mut shown: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    for ((f, _, id), tally) in &t.shown {
        shown.entry((f, id)).or_default().merge(*tally);
    }
    let pack = pack_prior(&t.families);
    let mut credit = Credit {
        pack_prior: pack,
        ..Credit::default()
    };
    let families: BTreeSet<&str> = t
        .families
        .keys()
        .map(String::as_str)
        .chain(known.keys().map(String::as_str))
        .collect();
    for f in families {
        let all = t.families.get(f).copied().unwrap_or_default();
        // No trial in the family: the pack's prior (without any trial
        // anywhere, the smoothed rate of nothing, 0.5, as before).
        let no_data = (all.trials == 0).then_some(pack).flatten();
        credit
            .priors
            .insert(f.to_owned(), no_data.unwrap_or(all.smoothed_rate()));
        let lessons: BTreeSet<&str> = shown
            .range((f, "")..)
            .take_while(|((fam, _), _)| *fam == f)
            .map(|((_, id), _)| *id)
            .chain(known.get(f).into_iter().flatten().map(String::as_str))
            .collect();
        let mut rows: Vec<LessonCredit> = lessons
            .into_iter()
            .map(|id| {
                let with = shown.get(&(f, id)).copied().unwrap_or_default();
                let m = no_data.unwrap_or(all.without(with).smoothed_rate());
                posterior(f, None, id, m, with)
            })
            .collect();
        rows.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.lesson.cmp(&b.lesson))
        });
        credit.lessons.extend(rows);
    }

    // Looked up once per per-rule row: a map, not a scan of every row.
    let family_score: HashMap<(&str, &str), f64> = credit
        .lessons
        .iter()
        .map(|c| ((c.family.as_str(), c.lesson.as_str()), c.score))
        .collect();
    let mut per_rule = Vec::new();
    for ((f, rule, id), with) in &t.shown {
        if with.trials < MIN_RULE_SHOWN {
            continue;
        }
        let Some(family_score) = family_score.get(&(f.as_str(), id.as_str())) else {
            continue;
        };
        per_rule.push(posterior(f, Some(rule), id, *family_score, *with));
    }
    credit.lessons.extend(per_rule);
    credit
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn trial(rule: &str, family: &str, won: bool, shown: &[&str]) -> Trial {
        Trial {
            rule: rule.into(),
            family: family.into(),
            won,
            shown: shown.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn known(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut k: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (f, l) in pairs {
            k.entry((*f).into()).or_default().insert((*l).into());
        }
        k
    }

    #[test]
    fn a_lesson_that_helps_scores_above_its_family_and_one_that_hurts_below() {
        let mut trials = Vec::new();
        // Without lessons the family wins 2 of 10.
        for i in 0..10 {
            trials.push(trial("r1", "f", i < 2, &[]));
        }
        // With `good` it wins 8 of 10; with `bad` 0 of 10.
        for i in 0..10 {
            trials.push(trial("r1", "f", i < 8, &["good"]));
            trials.push(trial("r1", "f", false, &["bad"]));
        }
        let c = compute(&trials, &known(&[("f", "new")]));
        let prior = c.priors["f"];
        let (good, bad, new) = (
            c.score("f", "good").unwrap(),
            c.score("f", "bad").unwrap(),
            c.score("f", "new").unwrap(),
        );
        assert!(good > 0.6 && good > prior, "good={good} prior={prior}");
        assert!(bad < prior && bad >= SCORE_FLOOR, "bad={bad} prior={prior}");
        // D2: no data, the family's prior.
        assert_eq!(new, prior);
        // Best first within the family.
        let order: Vec<&str> = c.lessons.iter().map(|l| l.lesson.as_str()).collect();
        assert_eq!(order[0], "good");
        // 10 shows of r1 each: per-rule rows exist for good and bad.
        assert!(c
            .lessons
            .iter()
            .any(|l| l.rule.as_deref() == Some("r1") && l.lesson == "good"));
    }

    #[test]
    fn families_are_credited_apart() {
        // The same lesson id in two families: one family's failures never
        // touch the other's score (D5: no coarse category).
        let mut trials = Vec::new();
        for _ in 0..20 {
            trials.push(trial("easy_1", "easy", true, &["shared"]));
            trials.push(trial("poison_1", "poison", false, &["shared"]));
        }
        trials.push(trial("easy_1", "easy", false, &[]));
        trials.push(trial("poison_1", "poison", false, &[]));
        let c = compute(&trials, &BTreeMap::new());
        assert!(c.score("easy", "shared").unwrap() > 0.8);
        assert!(c.score("poison", "shared").unwrap() < 0.2);
    }

    #[test]
    fn recomputing_gives_the_same_credit_and_the_floor_holds() {
        let trials: Vec<Trial> = (0..200)
            .map(|_| trial("r", "f", false, &["awful"]))
            .collect();
        let once = compute(&trials, &known(&[("f", "awful")]));
        let twice = compute(&trials, &known(&[("f", "awful")]));
        assert_eq!(once, twice);
        assert!(once.score("f", "awful").unwrap() >= SCORE_FLOOR);
    }

    #[test]
    fn a_lesson_listed_twice_in_one_prompt_counts_once() {
        let c = compute(&[trial("r", "f", true, &["a", "a"])], &BTreeMap::new());
        let row = c.lessons.iter().find(|l| l.lesson == "a").unwrap();
        assert_eq!((row.shown, row.wins), (1, 1));
    }

    #[test]
    fn a_family_without_trials_gets_the_pack_prior_below_every_proven_lesson() {
        let mut trials = Vec::new();
        // `hard` wins 1 of 10 without lessons; `tip` lifts it to 4 of 5.
        for i in 0..10 {
            trials.push(trial("hard_1", "hard", i < 1, &[]));
        }
        for i in 0..5 {
            trials.push(trial("hard_1", "hard", i < 4, &["tip"]));
        }
        // `easy` wins 3 of 10 without `key`, 9 of 10 with it.
        for i in 0..10 {
            trials.push(trial("easy_1", "easy", i < 3, &[]));
            trials.push(trial("easy_1", "easy", i < 9, &["key"]));
        }
        let c = compute(&trials, &known(&[("brand_new", "fresh"), ("hard", "tip")]));
        let pack = c.pack_prior.unwrap();
        assert!(
            pack <= c.priors["hard"] && pack <= c.priors["easy"],
            "{c:?}"
        );
        assert_eq!(c.priors["brand_new"], pack);
        let fresh = c.score("brand_new", "fresh").unwrap();
        assert_eq!(fresh, pack.max(SCORE_FLOOR));
        for proven in [("hard", "tip"), ("easy", "key")] {
            let s = c.score(proven.0, proven.1).unwrap();
            assert!(s >= c.priors[proven.0] && fresh < s, "{proven:?}: {c:?}");
        }
        // Without any trial there is no pack prior, and nothing is proven.
        let none = compute(&[], &known(&[("f", "l")]));
        assert_eq!(none.pack_prior, None);
        assert_eq!(none.priors["f"], 0.5);
    }

    /// `compute` as it was before counts were split from scoring (and
    /// before the pack prior), verbatim but for its name: the reference the
    /// tally path must match on every family with trials.
    fn compute_before(trials: &[Trial], known: &BTreeMap<String, BTreeSet<String>>) -> Credit {
        let mut family: BTreeMap<&str, Tally> = BTreeMap::new();
        let mut shown: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
        let mut by_rule: BTreeMap<(&str, &str, &str), Tally> = BTreeMap::new();
        for t in trials {
            family.entry(&t.family).or_default().add(t.won);
            let ids: BTreeSet<&str> = t.shown.iter().map(String::as_str).collect();
            for id in ids {
                shown.entry((&t.family, id)).or_default().add(t.won);
                by_rule
                    .entry((&t.family, &t.rule, id))
                    .or_default()
                    .add(t.won);
            }
        }
        let mut credit = Credit::default();
        let families: BTreeSet<&str> = family
            .keys()
            .copied()
            .chain(known.keys().map(String::as_str))
            .collect();
        for f in families {
            let all = family.get(f).copied().unwrap_or_default();
            credit.priors.insert(f.to_owned(), all.smoothed_rate());
            let lessons: BTreeSet<&str> = shown
                .keys()
                .filter(|(fam, _)| *fam == f)
                .map(|(_, id)| *id)
                .chain(known.get(f).into_iter().flatten().map(String::as_str))
                .collect();
            let mut rows: Vec<LessonCredit> = lessons
                .into_iter()
                .map(|id| {
                    let with = shown.get(&(f, id)).copied().unwrap_or_default();
                    let without = Tally {
                        trials: all.trials - with.trials,
                        wins: all.wins - with.wins,
                    };
                    posterior(f, None, id, without.smoothed_rate(), with)
                })
                .collect();
            rows.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| a.lesson.cmp(&b.lesson))
            });
            credit.lessons.extend(rows);
        }
        let mut per_rule = Vec::new();
        for ((f, rule, id), with) in by_rule {
            if with.trials < MIN_RULE_SHOWN {
                continue;
            }
            let Some(family_score) = credit.score(f, id) else {
                continue;
            };
            per_rule.push(posterior(f, Some(rule), id, family_score, with));
        }
        credit.lessons.extend(per_rule);
        credit
    }

    /// Random trials over a few families, rules and lessons (some listed
    /// twice in one prompt), and lessons on `main` never shown.
    fn random_history(seed: u64) -> (Vec<Trial>, BTreeMap<String, BTreeSet<String>>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let families = rng.random_range(1..5);
        let mut trials = Vec::new();
        let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in 0..families {
            let family = format!("fam{f}");
            let base = rng.random_range(0.0..1.0);
            for _ in 0..rng.random_range(1..300) {
                let shown: Vec<String> = (0..rng.random_range(0..6))
                    .map(|_| format!("l{}", rng.random_range(0..12)))
                    .collect();
                trials.push(Trial {
                    rule: format!("{family}_r{}", rng.random_range(0..4)),
                    family: family.clone(),
                    won: rng.random_bool(base),
                    shown,
                });
            }
            let on_main = known.entry(family).or_default();
            for l in 0..rng.random_range(0..16) {
                on_main.insert(format!("l{l}"));
            }
        }
        (trials, known)
    }

    #[test]
    fn counting_apart_from_scoring_gives_exactly_the_credit_of_before() {
        for seed in 0..200 {
            let (trials, known) = random_history(seed);
            let before = compute_before(&trials, &known);
            let now = compute(&trials, &known);
            // Every family here has trials: the pack prior changes nothing.
            assert_eq!(now.priors, before.priors, "seed {seed}");
            assert_eq!(now.lessons, before.lessons, "seed {seed}");
            assert!(now.pack_prior.is_some());
        }
    }
}
