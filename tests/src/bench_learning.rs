//! `bench learning` (issue 6): a campaign of runs in which the fake LLM's
//! success depends on the lessons in its prompt, played once with a naive
//! learner that scores lessons per coarse category (V1) and once with the
//! dream stage's credit (V2).
//!
//! In-process and deterministic: no Docker, Redis or Postgres, one seeded
//! [`StdRng`] per policy (and one for the rules). It takes well under a
//! second.
//!
//! # What it reproduces
//!
//! A public single-host harness scored lessons per coarse category and its
//! next run got worse (wins:regressions fell from 1.4:1 to 0.47:1). Four
//! mechanisms, all in V1 here as described:
//!
//! 1. **Coarse credit.** A lesson's score is its *category*'s fix rate over
//!    the last run, shared by every lesson of the category. The `auditing`
//!    category mixes an easy family (`audit_rules_dac_modification`) with a
//!    poisonous one (`grub2_audit_argument`: boot-loader rules a target
//!    cannot pass, whose Reflector lessons — "update grub and restart
//!    auditd" — break the easy family's fixes). The category's rate falls
//!    below one half, and the easy family's proven lessons go down with it.
//! 2. **New means neutral.** A lesson without a score ranks at 0.5, so in a
//!    category at 0.47 every fresh lesson outranks every proven one.
//! 3. **Same-run lessons.** A lesson joins the pool the moment the
//!    Reflector writes it and is shown to the run's later rules, at 0.5 (2):
//!    the lessons of the run's own failures — junk far more often than
//!    keys, and poison from a family that fails every attempt — crowd the
//!    proven ones out of the category's prompts.
//! 4. **No record of prompts.** Nothing says which lessons an attempt saw,
//!    so nothing better than category outcomes can be computed: V1 keeps no
//!    trials at all.
//!
//! V2 is what ships: trials record exactly the lessons each prompt showed
//! (E4); [`credit::compute`] scores every (family, lesson) against the
//! family's attempts without it (D1), with the floor (D4); the ranking is
//! published with the family priors (K4) and every lease picks its lessons
//! with the agent's own [`Guidance::select`] over its family's files on
//! `main` (D5: skill-pack families, never categories; a lesson without data
//! sits at the family prior, below proven ones, D2). Candidates wait for
//! the dream stage after the run (D3) and are promoted only with evidence:
//! the lease that wrote them ended fixed (the evidence gate of D7, alone).
//!
//! # The model
//!
//! 260 rules in 8 families of 4 categories (see [`Config::default`]),
//! leased in catalog order every run (families as the pack lists them).
//! Each rule has a per-attempt success probability `base` (its family's,
//! jittered per rule in log-odds); the `grub2_*` family's is 0. An
//! attempt's log-odds are `logit(base)`, plus [`Model::key_boost`] if the
//! prompt holds its family's *key* lesson (the insight that makes the
//! family's fix work; counted once however often repeated), minus
//! [`Model::poison_cost`] per lesson of a poisonous *sibling* family of the
//! same category, minus [`Model::junk_cost`] per other lesson (generic
//! advice, other families' keys), minus [`Model::dilution_cost`] per lesson
//! beyond [`Model::dilution_free`] (crowded prompts). The prompt is the
//! ranked lessons (top [`Config::top_k`], the agent's `MAX_LESSONS`) plus
//! the lease's own earlier reflections (the agent's loop shows them to the
//! next attempt, for both policies). A rule gets up to [`MAX_ATTEMPTS`]
//! attempts; after a failed one the Reflector writes a lesson: the family's
//! key with probability `key_chance`, otherwise junk; for a poisonous
//! family poison (90 %) or junk; and junk after an attempt a poisonous
//! lesson broke (it teaches about the breakage, not the rule). A rule is
//! fixed in a run if any attempt wins.
//!
//! Figures: a *win* is a rule fixed in run k and not in k−1, a
//! *regression* the reverse; each policy's ratio is the sum of wins over
//! runs 2..R over the sum of regressions, and the fix rate is fixed/rules
//! (at most 215/260: the `grub2_*` rules never pass). Goal: V1 below 1 (the
//! failure reproduced), V2 at least 3 with a fix rate that never falls from
//! one run to the next.
//!
//! V2 is judged as the dream stage judges (`dream::comparable`): comparable
//! outcomes only, and after each run the previous pass's promotions whose
//! family regressed are reverted (D8). A third campaign, **V2 with
//! outages**, plays V2 again with one run ([`Config::outage_run`]) in which
//! 30 % of the rules escalate as `llm_unavailable` before any attempt.
//! Goal: its ratio at least 3 and no revert from the outage run;
//! `v2_outage_naive_reverts` says what counting the outage as regressions
//! would have deleted.
//!
//! # Why V1 fails and V2 does not
//!
//! In run 1, V1's same-run sharing helps (every lesson is new, so ties, and
//! each family's own fresh keys reach its later rules): V1 starts above V2,
//! whose first run sees no lessons at all (D3's price). After it, the
//! `auditing` category scores 40/85 < 0.5 (the `grub2_*` rules never pass),
//! so its ~120 poisonous lessons and the easy family's keys share one
//! demoted score; the easy family's next leases draw from that pool, fail,
//! and the fresh lessons of those failures (0.5) outrank the proven keys
//! (1, 2, 3).
//! In the other categories every lesson ties at the category's rate, so the
//! family's key competes with its sibling's lessons and a growing heap of
//! junk, and nothing can separate them (4). Outcomes drift down: more
//! regressions than wins. V2 never shows a lesson outside its family,
//! promotes only lessons of leases that ended fixed (keys far more often
//! than junk), and credits each lesson from the prompts that showed it: a
//! lesson shown without wins scores below its family's prior, so the
//! lessons not shown yet (at the prior) take its place in the next run. Once each family's key is
//! shown, its rules pass almost surely, so the fix rate climbs and stays.
//!
//! Spread over seeds 1–20 (6 runs): V1 0.65–0.98, V2 at least 5.67 (most
//! seeds have no regression at all, printed `inf`); V2's fix rate fell by
//! one rule in 2 of the 20. The default seed is 1.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleet_agent::remediation::{Guidance, MAX_LESSONS};
use fleet_common::{Budgets, Checks, RuleTask, RunId, TaskId};
use fleet_coordinator::dream::comparable::{judge, Standing};
use fleet_coordinator::dream::credit::{self, Trial};
use fleet_knowledge::{LessonFile, LessonKind, Provenance, Ranking};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Attempts per rule and run (the default budget).
pub const MAX_ATTEMPTS: u32 = 3;
/// V1's neutral score for a lesson it has not scored yet.
pub const V1_NEUTRAL: f64 = 0.5;

/// One rule family of the simulated skill pack.
#[derive(Debug, Clone)]
pub struct FamilySpec {
    pub name: &'static str,
    /// The coarse category V1 scores by.
    pub category: &'static str,
    pub rules: usize,
    /// Per-attempt success probability without lessons.
    pub base: f64,
    /// Probability that a failed attempt's reflection is the family's key.
    pub key_chance: f64,
    /// Its rules cannot pass; its lessons harm sibling families.
    pub poisonous: bool,
}

/// How the lessons in a prompt move an attempt's log-odds.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub key_boost: f64,
    pub junk_cost: f64,
    pub poison_cost: f64,
    pub dilution_cost: f64,
    pub dilution_free: usize,
    /// Spread of a rule's base around its family's, in log-odds (uniform ±).
    pub rule_jitter: f64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub runs: usize,
    pub families: Vec<FamilySpec>,
    pub model: Model,
    /// Lessons per prompt for V1; V2 takes the agent's own `MAX_LESSONS`
    /// through [`Guidance::select`].
    pub top_k: usize,
    /// The run of the third campaign (V2 with outages) in which
    /// `outage_share` of the rules escalate as `llm_unavailable`.
    pub outage_run: usize,
    pub outage_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        let fam = |name, category, rules, base, key_chance, poisonous| FamilySpec {
            name,
            category,
            rules,
            base,
            key_chance,
            poisonous,
        };
        Config {
            seed: 1,
            runs: 6,
            families: vec![
                fam(
                    "audit_rules_dac_modification",
                    "auditing",
                    40,
                    0.40,
                    0.35,
                    false,
                ),
                fam("grub2_audit_argument", "auditing", 45, 0.0, 0.0, true),
                fam("service_enabled", "services", 30, 0.20, 0.25, false),
                fam("service_disabled", "services", 30, 0.35, 0.35, false),
                fam("file_permissions", "permissions", 35, 0.45, 0.35, false),
                fam("file_owner", "permissions", 25, 0.20, 0.25, false),
                fam("sysctl", "system", 30, 0.15, 0.25, false),
                fam("accounts_password", "system", 25, 0.05, 0.15, false),
            ],
            model: Model {
                key_boost: 6.5,
                junk_cost: 0.2,
                poison_cost: 2.5,
                dilution_cost: 0.1,
                dilution_free: 2,
                rule_jitter: 0.5,
            },
            top_k: MAX_LESSONS,
            outage_run: 4,
            outage_share: 0.3,
        }
    }
}

/// What a lesson really says (the fake LLM knows; the policies do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// The insight that makes family `.0`'s fixes work.
    Key(usize),
    /// Generic advice.
    Junk,
    /// Drawn from poisonous family `.0`'s failures.
    Poison(usize),
}

#[derive(Debug, Clone)]
struct Lesson {
    id: String,
    family: usize,
    content: Content,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    family: usize,
    /// Per-attempt log-odds without lessons; `None`: it never passes.
    logit: Option<f64>,
}

/// The rules, families and model both policies play.
struct World {
    families: Vec<FamilySpec>,
    categories: Vec<&'static str>,
    /// Category index of each family.
    family_category: Vec<usize>,
    rules: Vec<Rule>,
    model: Model,
}

impl World {
    fn new(cfg: &Config) -> World {
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x005e_ed0f_7e57);
        let mut categories: Vec<&'static str> = Vec::new();
        let mut family_category = Vec::new();
        for f in &cfg.families {
            let c = match categories.iter().position(|c| *c == f.category) {
                Some(c) => c,
                None => {
                    categories.push(f.category);
                    categories.len() - 1
                }
            };
            family_category.push(c);
        }
        let mut rules = Vec::new();
        for (fi, f) in cfg.families.iter().enumerate() {
            for i in 1..=f.rules {
                let logit = (f.base > 0.0).then(|| {
                    logit(f.base) + rng.random_range(-cfg.model.rule_jitter..=cfg.model.rule_jitter)
                });
                rules.push(Rule {
                    name: format!("{}_{i:02}", f.name),
                    family: fi,
                    logit,
                });
            }
        }
        World {
            families: cfg.families.clone(),
            categories,
            family_category,
            rules,
            model: cfg.model,
        }
    }

    /// The fake LLM: probability that an attempt at `rule` with `shown` in
    /// its prompt passes.
    fn success(&self, rule: &Rule, shown: &[&Lesson]) -> f64 {
        let Some(mut x) = rule.logit else {
            return 0.0;
        };
        let m = &self.model;
        let f = rule.family;
        if shown.iter().any(|l| l.content == Content::Key(f)) {
            x += m.key_boost;
        }
        for l in shown {
            x -= match l.content {
                Content::Key(g) if g == f => 0.0,
                _ if self.poisons(l, f) => m.poison_cost,
                _ => m.junk_cost,
            };
        }
        x -= m.dilution_cost * shown.len().saturating_sub(m.dilution_free) as f64;
        1.0 / (1.0 + (-x).exp())
    }

    /// True if `lesson` is poison for rules of `family`: drawn from a
    /// poisonous sibling of the same category.
    fn poisons(&self, lesson: &Lesson, family: usize) -> bool {
        matches!(lesson.content, Content::Poison(src)
            if src != family && self.family_category[src] == self.family_category[family])
    }

    /// The Reflector after a failed attempt at a rule of `family` whose
    /// prompt showed `shown`. An attempt a poisonous lesson broke teaches
    /// about that breakage, not about the rule: its lesson is junk.
    fn reflect(&self, family: usize, shown: &[&Lesson], rng: &mut StdRng) -> Content {
        let f = &self.families[family];
        if shown.iter().any(|l| self.poisons(l, family)) {
            Content::Junk
        } else if f.poisonous {
            if rng.random_bool(0.9) {
                Content::Poison(family)
            } else {
                Content::Junk
            }
        } else if rng.random_bool(f.key_chance) {
            Content::Key(family)
        } else {
            Content::Junk
        }
    }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// One policy's figures for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunFigures {
    pub fixed: usize,
    pub fix_rate: f64,
    /// Against the previous run (0 for the first).
    pub wins: usize,
    pub regressions: usize,
}

/// One policy over the campaign.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyFigures {
    pub runs: Vec<RunFigures>,
}

impl PolicyFigures {
    pub fn wins(&self) -> usize {
        self.runs.iter().map(|r| r.wins).sum()
    }

    pub fn regressions(&self) -> usize {
        self.runs.iter().map(|r| r.regressions).sum()
    }

    /// Wins over regressions, runs 2..R summed (infinite without a
    /// regression).
    pub fn ratio(&self) -> f64 {
        self.wins() as f64 / self.regressions() as f64
    }

    pub fn fix_rate_last(&self) -> f64 {
        self.runs.last().map_or(0.0, |r| r.fix_rate)
    }

    /// True if no run's fix rate is below the run before.
    pub fn fix_rate_never_falls(&self) -> bool {
        self.runs.windows(2).all(|w| w[1].fixed >= w[0].fixed)
    }

    /// A run judged as the dream stage judges it: comparable rules only.
    fn push_judged(&mut self, now: &[Standing], previous: Option<&[Standing]>) -> Vec<usize> {
        let fixed = now.iter().filter(|s| **s == Standing::Fixed).count();
        let (wins, regressions, regressed) = match previous {
            Some(prev) => {
                let j = judged(now, prev);
                (j.wins.len(), j.regressions.len(), j.regressions)
            }
            None => (0, 0, Vec::new()),
        };
        self.runs.push(RunFigures {
            fixed,
            fix_rate: fixed as f64 / now.len().max(1) as f64,
            wins,
            regressions,
        });
        regressed
    }

    fn push(&mut self, fixed: &[bool], previous: Option<&[bool]>) {
        let n = fixed.iter().filter(|f| **f).count();
        let (mut wins, mut regressions) = (0, 0);
        if let Some(prev) = previous {
            for (now, before) in fixed.iter().zip(prev) {
                match (before, now) {
                    (false, true) => wins += 1,
                    (true, false) => regressions += 1,
                    _ => {}
                }
            }
        }
        self.runs.push(RunFigures {
            fixed: n,
            fix_rate: n as f64 / fixed.len().max(1) as f64,
            wins,
            regressions,
        });
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LearningFigures {
    pub runs: usize,
    pub rules: usize,
    pub v1: PolicyFigures,
    pub v2: PolicyFigures,
    /// V2 again, with one outage run (`Config::outage_run`); its wins and
    /// regressions count comparable rules only, as the dream stage does.
    pub v2_outage: PolicyFigures,
    /// Reverts (D8) the outage run's dream pass made.
    pub v2_outage_reverts: usize,
    /// What that pass would have reverted had it counted the outage as
    /// regressions (the failure comparable outcomes prevent).
    pub v2_outage_naive_reverts: usize,
}

impl LearningFigures {
    /// The `make bench` line.
    pub fn line(&self) -> String {
        format!(
            "bench learning: runs={} rules={} v1_win_regression={} v2_win_regression={} v1_fixrate_last={:.2} v2_fixrate_last={:.2} v2_outage_win_regression={} v2_outage_reverts={} v2_outage_naive_reverts={}",
            self.runs,
            self.rules,
            ratio_text(&self.v1),
            ratio_text(&self.v2),
            self.v1.fix_rate_last(),
            self.v2.fix_rate_last(),
            ratio_text(&self.v2_outage),
            self.v2_outage_reverts,
            self.v2_outage_naive_reverts,
        ) + &format!(" goal_met={}", self.goal_met())
    }

    /// V1 below 1 (the failure reproduced); V2 at least 3 with a fix rate
    /// that never falls; with an outage, still at least 3 and no revert.
    pub fn goal_met(&self) -> bool {
        self.v1.ratio() < 1.0
            && self.v2.ratio() >= 3.0
            && self.v2.fix_rate_never_falls()
            && self.v2_outage.ratio() >= 3.0
            && self.v2_outage_reverts == 0
    }
}

fn ratio_text(p: &PolicyFigures) -> String {
    if p.regressions() == 0 {
        "inf".into()
    } else {
        format!("{:.2}", p.ratio())
    }
}

/// V1: the naive learner, category-level credit.
struct V1 {
    rng: StdRng,
    lessons: Vec<Lesson>,
    /// Per lesson: its score, `None` until a run has ended since it was
    /// written (then it ranks at [`V1_NEUTRAL`]).
    scores: Vec<Option<f64>>,
    /// Per category: its lessons, oldest first.
    pools: Vec<Vec<usize>>,
    next_id: usize,
}

impl V1 {
    fn new(world: &World, seed: u64) -> V1 {
        V1 {
            rng: StdRng::seed_from_u64(seed),
            lessons: Vec::new(),
            scores: Vec::new(),
            pools: vec![Vec::new(); world.categories.len()],
            next_id: 0,
        }
    }

    /// Top `k` of the category's pool by score; equal scores in random
    /// order (the harness kept none).
    fn select(&mut self, category: usize, k: usize) -> Vec<usize> {
        let mut pool = self.pools[category].clone();
        pool.shuffle(&mut self.rng);
        let score = |i: &usize| self.scores[*i].unwrap_or(V1_NEUTRAL);
        pool.sort_by(|a, b| score(b).total_cmp(&score(a)));
        pool.truncate(k);
        pool
    }

    fn run(&mut self, world: &World, top_k: usize) -> Vec<bool> {
        let mut fixed = vec![false; world.rules.len()];
        for (r, rule) in world.rules.iter().enumerate() {
            let category = world.family_category[rule.family];
            let mut shown = self.select(category, top_k);
            for _ in 0..MAX_ATTEMPTS {
                let lessons: Vec<&Lesson> = shown.iter().map(|i| &self.lessons[*i]).collect();
                let p = world.success(rule, &lessons);
                if self.rng.random_bool(p) {
                    fixed[r] = true;
                    break;
                }
                // Mechanism 3: into the pool at once, for the run's later
                // rules (and, as its own reflection, this lease's next try).
                let content = world.reflect(rule.family, &lessons, &mut self.rng);
                let i = self.lessons.len();
                self.next_id += 1;
                self.lessons.push(Lesson {
                    id: format!("v1-{:06}", self.next_id),
                    family: rule.family,
                    content,
                });
                self.scores.push(None);
                self.pools[category].push(i);
                shown.push(i);
            }
        }
        // Mechanisms 1 and 4: every lesson of a category gets the
        // category's fix rate; lessons never scored stay at 0.5 (2).
        let mut tally = vec![(0usize, 0usize); world.categories.len()];
        for (rule, ok) in world.rules.iter().zip(&fixed) {
            let t = &mut tally[world.family_category[rule.family]];
            t.0 += 1;
            t.1 += usize::from(*ok);
        }
        for (c, pool) in self.pools.iter().enumerate() {
            let rate = tally[c].1 as f64 / tally[c].0.max(1) as f64;
            for i in pool {
                self.scores[*i] = Some(rate);
            }
        }
        fixed
    }
}

/// V2: the dream stage's credit and the agent's guidance.
struct V2 {
    rng: StdRng,
    lessons: Vec<Lesson>,
    by_id: HashMap<String, usize>,
    /// Per family: the lessons on `main`.
    main: Vec<Vec<usize>>,
    /// Every evaluated attempt with the lessons its prompt listed (E4).
    trials: Vec<Trial>,
    ranking: Ranking,
    next_id: usize,
    /// The last run's standings and the lessons its dream pass promoted:
    /// what the next pass compares against and may revert (D6, D8).
    previous: Option<(Vec<Standing>, Vec<usize>)>,
    /// Lessons reverted, per run (1-based index - 1).
    pub reverts: Vec<usize>,
    /// Per run: what a pass counting every outcome would have reverted.
    pub naive_reverts: Vec<usize>,
}

/// The dream stage's judgement of `now` against `previous`, rule indices.
fn judged(
    now: &[Standing],
    previous: &[Standing],
) -> fleet_coordinator::dream::comparable::Judgement<usize> {
    let max = fleet_common::skill_pack::DreamSettings::default().max_not_comparable;
    judge(
        now.iter()
            .zip(previous)
            .enumerate()
            .map(|(i, (n, p))| (i, n.clone(), Some(p.clone()))),
        max,
    )
}

impl V2 {
    fn new(world: &World, seed: u64) -> V2 {
        V2 {
            rng: StdRng::seed_from_u64(seed),
            lessons: Vec::new(),
            by_id: HashMap::new(),
            main: vec![Vec::new(); world.families.len()],
            trials: Vec::new(),
            ranking: Ranking::default(),
            next_id: 0,
            previous: None,
            reverts: Vec::new(),
            naive_reverts: Vec::new(),
        }
    }

    /// D8: the lessons the previous pass promoted whose family has a rule
    /// in `regressed`; removed from `main` unless `dry`.
    fn revert(&mut self, world: &World, regressed: &[usize], dry: bool) -> usize {
        let Some((_, promoted)) = &self.previous else {
            return 0;
        };
        let families: BTreeSet<usize> = regressed.iter().map(|r| world.rules[*r].family).collect();
        let undone: Vec<usize> = promoted
            .iter()
            .copied()
            .filter(|i| families.contains(&self.lessons[*i].family))
            .collect();
        if !dry {
            for i in &undone {
                self.main[self.lessons[*i].family].retain(|l| l != i);
            }
        }
        undone.len()
    }

    fn files(&self, world: &World, family: usize) -> Vec<LessonFile> {
        self.main[family]
            .iter()
            .map(|i| {
                let l = &self.lessons[*i];
                LessonFile {
                    id: l.id.clone(),
                    kind: LessonKind::Lesson,
                    family: world.families[l.family].name.to_owned(),
                    scope: "family".into(),
                    pattern: None,
                    provenance: Provenance {
                        run: "bench".into(),
                        attempt: 1,
                        agent: "bench".into(),
                        source_commit: None,
                        merged: Vec::new(),
                    },
                    body: format!("lesson {}", l.id),
                }
            })
            .collect()
    }

    /// One run; with `outage`, that share of the rules escalates as
    /// `llm_unavailable` before any attempt (the endpoint was down).
    fn run(&mut self, world: &World, run: usize, outage: Option<f64>) -> Vec<Standing> {
        let files: Vec<Vec<LessonFile>> = (0..world.families.len())
            .map(|f| self.files(world, f))
            .collect();
        let mut standings = vec![Standing::NotFixed; world.rules.len()];
        let mut promoted: Vec<usize> = Vec::new();
        // Its own stream, so the campaign without an outage plays the same.
        let mut outage_rng = StdRng::seed_from_u64((run as u64) ^ 0x07a6e);
        for (r, rule) in world.rules.iter().enumerate() {
            if let Some(share) = outage {
                if outage_rng.random_bool(share) {
                    standings[r] = Standing::NotComparable("llm_unavailable".into());
                    continue;
                }
            }
            let family = world.families[rule.family].name;
            let task = RuleTask {
                run: RunId(run as i64),
                task: TaskId(r as i64),
                rule: rule.name.clone(),
                family: family.to_owned(),
                skill_pack: "bench".into(),
                profile: "bench".into(),
                budgets: Budgets {
                    max_attempts: MAX_ATTEMPTS,
                    ..Budgets::default()
                },
                checks: Checks::default(),
                rule_text: None,
                job: None,
            };
            let guidance = Guidance::select(&task, &self.ranking, files[rule.family].clone());
            let listed: Vec<String> = guidance.lessons.iter().map(|l| l.id.clone()).collect();
            let mut shown: Vec<usize> = listed.iter().map(|id| self.by_id[id]).collect();
            let mut candidates = Vec::new();
            for _ in 0..MAX_ATTEMPTS {
                let lessons: Vec<&Lesson> = shown.iter().map(|i| &self.lessons[*i]).collect();
                let p = world.success(rule, &lessons);
                let won = self.rng.random_bool(p);
                self.trials.push(Trial {
                    rule: rule.name.clone(),
                    family: family.to_owned(),
                    won,
                    shown: listed.clone(),
                });
                if won {
                    standings[r] = Standing::Fixed;
                    // Evidence gate: the lease that wrote them ended fixed.
                    promoted.append(&mut candidates);
                    break;
                }
                // A candidate: on the lease branch, shown to this lease's
                // next attempt as its reflection, never to other prompts of
                // this run (D3).
                let content = world.reflect(rule.family, &lessons, &mut self.rng);
                self.next_id += 1;
                let id = format!("{family}-r{run:02}-{:06}", self.next_id);
                let i = self.lessons.len();
                self.by_id.insert(id.clone(), i);
                self.lessons.push(Lesson {
                    id,
                    family: rule.family,
                    content,
                });
                candidates.push(i);
                shown.push(i);
            }
        }
        // The dream stage: compare and revert (D6, D8), promote, then
        // recompute credit from all trials and publish the ranking: every
        // lesson on `main`, those never shown at their family's prior (what
        // `compute` gives them).
        let (mut reverted, mut naive) = (0, 0);
        if let Some((previous, _)) = self.previous.clone() {
            let j = judged(&standings, &previous);
            if j.revert_withheld.is_none() {
                reverted = self.revert(world, &j.regressions, false);
            }
            // Every outcome counted: the outage read as regressions.
            let all: Vec<Standing> = standings
                .iter()
                .map(|s| match s {
                    Standing::NotComparable(_) => Standing::NotFixed,
                    s => s.clone(),
                })
                .collect();
            naive = self.revert(world, &judged(&all, &previous).regressions, true);
        }
        self.reverts.push(reverted);
        self.naive_reverts.push(naive);
        for i in &promoted {
            self.main[self.lessons[*i].family].push(*i);
        }
        let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (f, ids) in self.main.iter().enumerate() {
            let set = known.entry(world.families[f].name.to_owned()).or_default();
            set.extend(ids.iter().map(|i| self.lessons[*i].id.clone()));
        }
        let c = credit::compute(&self.trials, &known);
        // The ranking exactly as the dream stage publishes it.
        self.ranking = fleet_coordinator::dream::ranking_of(&c, &known);
        self.previous = Some((standings.clone(), promoted));
        standings
    }
}

/// Plays the campaign with both policies, and V2 once more with an outage
/// run; `on_run(k, v1, v2, v2_outage)` after each run (1-based).
pub fn run_campaign(
    cfg: &Config,
    mut on_run: impl FnMut(usize, &RunFigures, &RunFigures, &RunFigures),
) -> LearningFigures {
    let world = World::new(cfg);
    let mut v1 = V1::new(&world, cfg.seed);
    let mut v2 = V2::new(&world, cfg.seed);
    let mut v2_outage = V2::new(&world, cfg.seed);
    let mut figures = LearningFigures {
        runs: cfg.runs,
        rules: world.rules.len(),
        v1: PolicyFigures::default(),
        v2: PolicyFigures::default(),
        v2_outage: PolicyFigures::default(),
        v2_outage_reverts: 0,
        v2_outage_naive_reverts: 0,
    };
    let mut prev1: Option<Vec<bool>> = None;
    let (mut prev2, mut prev3): (Option<Vec<Standing>>, Option<Vec<Standing>>) = (None, None);
    for k in 1..=cfg.runs {
        let f1 = v1.run(&world, cfg.top_k);
        let f2 = v2.run(&world, k, None);
        let outage = (k == cfg.outage_run).then_some(cfg.outage_share);
        let f3 = v2_outage.run(&world, k, outage);
        figures.v1.push(&f1, prev1.as_deref());
        figures.v2.push_judged(&f2, prev2.as_deref());
        figures.v2_outage.push_judged(&f3, prev3.as_deref());
        on_run(
            k,
            &figures.v1.runs[k - 1],
            &figures.v2.runs[k - 1],
            &figures.v2_outage.runs[k - 1],
        );
        prev1 = Some(f1);
        prev2 = Some(f2);
        prev3 = Some(f3);
    }
    if let Some(k) = cfg.outage_run.checked_sub(1).filter(|k| *k < cfg.runs) {
        figures.v2_outage_reverts = v2_outage.reverts[k];
        figures.v2_outage_naive_reverts = v2_outage.naive_reverts[k];
    }
    figures
}

/// `fleet-bench learning`: the campaign, progress on stderr.
pub fn bench_learning(cfg: &Config) -> LearningFigures {
    run_campaign(cfg, |k, a, b, c| {
        eprintln!(
            "bench learning: run {k}: v1 fixrate={:.3} wins={} regressions={} | v2 fixrate={:.3} wins={} regressions={} | v2+outage fixrate={:.3} wins={} regressions={}",
            a.fix_rate, a.wins, a.regressions, b.fix_rate, b.wins, b.regressions, c.fix_rate, c.wins, c.regressions
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_llm_rewards_the_key_and_poison_hurts_only_siblings() {
        let world = World::new(&Config::default());
        let lesson = |family, content| Lesson {
            id: String::new(),
            family,
            content,
        };
        // Family 0 (easy) and 1 (poisonous) share `auditing`; 2 is elsewhere.
        let audit = world.rules.iter().find(|r| r.family == 0).unwrap();
        let service = world.rules.iter().find(|r| r.family == 2).unwrap();
        let grub = world.rules.iter().find(|r| r.family == 1).unwrap();
        let (key, poison, junk) = (
            lesson(0, Content::Key(0)),
            lesson(1, Content::Poison(1)),
            lesson(0, Content::Junk),
        );
        let bare = world.success(audit, &[]);
        assert!(world.success(audit, &[&key]) > 0.95 && bare < 0.7);
        assert!(world.success(audit, &[&key, &poison, &poison, &poison]) < bare);
        assert!(world.success(audit, &[&junk]) < bare);
        // Poison outside its category is only junk; a key elsewhere too.
        let s = world.success(service, &[]);
        assert_eq!(
            world.success(service, &[&poison]),
            world.success(service, &[&junk])
        );
        assert!(world.success(service, &[&key]) < s);
        assert_eq!(world.success(grub, &[&key]), 0.0);
    }

    #[test]
    fn credit_per_family_beats_category_credit_and_the_fix_rate_never_falls() {
        let cfg = Config {
            runs: 5,
            ..Config::default()
        };
        let f = run_campaign(&cfg, |_, _, _, _| {});
        assert!(f.rules >= 200);
        assert!(f.v2.ratio() > f.v1.ratio(), "{f:?}");
        assert!(f.v1.ratio() < 1.0, "{f:?}");
        assert!(f.v2.fix_rate_never_falls(), "{f:?}");
        // Deterministic: the same seed gives the same figures.
        assert_eq!(run_campaign(&cfg, |_, _, _, _| {}), f);
    }

    #[test]
    fn an_outage_run_reverts_nothing_and_learning_goes_on() {
        let f = run_campaign(&Config::default(), |_, _, _, _| {});
        assert_eq!(f.v2_outage_reverts, 0, "{f:?}");
        assert!(
            f.v2_outage_naive_reverts > 0,
            "counting the outage as regressions would have reverted knowledge: {f:?}"
        );
        assert!(f.v2_outage.ratio() >= 3.0, "{f:?}");
        // After the outage the fix rate is back where the campaign without
        // one ends.
        assert!(
            f.v2_outage.fix_rate_last() >= f.v2.fix_rate_last() - 0.02,
            "{f:?}"
        );
    }
}
