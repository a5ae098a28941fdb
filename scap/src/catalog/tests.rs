//! The catalog on a small hand-written benchmark; the real datastreams are
//! in `tests/catalog.rs`.

use super::*;

const BENCHMARK: &str = r##"<?xml version="1.0"?>
<ds:data-stream-collection xmlns:ds="http://scap.nist.gov/schema/scap/source/1.2">
 <ds:component id="c">
  <Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" xmlns:h="http://www.w3.org/1999/xhtml" id="xccdf_t_benchmark_B">
   <Profile id="xccdf_t_profile_base">
    <title>Base</title>
    <description>The <h:b>base</h:b> profile</description>
    <select idref="xccdf_t_rule_a" selected="true"/>
    <select idref="xccdf_t_rule_b" selected="true"/>
   </Profile>
   <Profile id="xccdf_t_profile_child" extends="xccdf_t_profile_base">
    <title>Child</title>
    <select idref="xccdf_t_rule_a" selected="false"/>
    <select idref="xccdf_t_group_off" selected="true"/>
   </Profile>
   <Profile id="xccdf_t_profile_loop1" extends="xccdf_t_profile_loop2"><title>1</title></Profile>
   <Profile id="xccdf_t_profile_loop2" extends="loop1"><title>2</title></Profile>
   <Profile id="xccdf_t_profile_orphan" extends="xccdf_t_profile_gone"><title>o</title></Profile>
   <Value id="xccdf_t_value_port" type="number">
    <value selector="high">2222</value>
    <value>22</value>
   </Value>
   <Group id="xccdf_t_group_on">
    <platform idref="cpe:/o:t:1"/>
    <Rule id="xccdf_t_rule_a" selected="false" severity="high">
     <title>Rule A</title>
     <description>Listen on <sub idref="xccdf_t_value_port"/>:
      <h:pre>grep <h:code>Port</h:code> /etc/ssh/sshd_config</h:pre></description>
     <rationale>Because.</rationale>
     <platform idref="#machine"/>
     <fix system="urn:xccdf:fix:script:sh">echo fix</fix>
     <check system="http://oval.mitre.org/XMLSchema/oval-definitions-5">
      <check-content-ref href="t-oval.xml" name="oval:t-a:def:1"/>
     </check>
     <check system="http://scap.nist.gov/schema/ocil/2">
      <check-content-ref href="t-ocil.xml" name="ocil:t-a:questionnaire:1"/>
     </check>
    </Rule>
    <Rule id="xccdf_t_rule_b" selected="false">
     <title>Rule B</title>
     <fix system="urn:xccdf:fix:script:ansible">- name: b</fix>
    </Rule>
   </Group>
   <Group id="xccdf_t_group_off" selected="false">
    <Rule id="xccdf_t_rule_c" selected="true"><title>Rule C</title></Rule>
   </Group>
   <Rule id="xccdf_t_rule_d"><title>Rule D</title></Rule>
  </Benchmark>
 </ds:component>
</ds:data-stream-collection>"##;

fn ids(rules: Vec<&Rule>) -> Vec<&str> {
    rules.into_iter().map(|r| r.short_id.as_str()).collect()
}

#[test]
fn defaults_skip_rules_in_deselected_groups() {
    let catalog = Catalog::parse(BENCHMARK).unwrap();
    assert_eq!(catalog.benchmark_id(), "xccdf_t_benchmark_B");
    assert_eq!(ids(catalog.default_rules()), ["d"]);
}

#[test]
fn profile_selects_apply_after_the_profiles_it_extends() {
    let catalog = Catalog::parse(BENCHMARK).unwrap();
    assert_eq!(
        ids(catalog.rules_of("xccdf_t_profile_base").unwrap()),
        ["a", "b", "d"]
    );
    // child: inherits a and b, drops a, releases group_off (and c in it)
    assert_eq!(ids(catalog.rules_of("child").unwrap()), ["b", "c", "d"]);
}

#[test]
fn profile_errors() {
    let catalog = Catalog::parse(BENCHMARK).unwrap();
    assert!(matches!(catalog.rules_of("nope"), Err(ScapError::UnknownProfile(p)) if p == "nope"));
    assert!(matches!(
        catalog.rules_of("loop1"),
        Err(ScapError::ProfileCycle(_))
    ));
    assert!(matches!(
        catalog.rules_of("orphan"),
        Err(ScapError::UnknownProfile(p)) if p == "xccdf_t_profile_gone"
    ));
}

#[test]
fn rule_fields() {
    let catalog = Catalog::parse(BENCHMARK).unwrap();
    let a = catalog.rule("a").unwrap();
    assert_eq!(a.id, "xccdf_t_rule_a");
    assert!(std::ptr::eq(a, catalog.rule("xccdf_t_rule_a").unwrap()));
    assert_eq!(a.title, "Rule A");
    assert_eq!(
        a.description,
        "Listen on 22: grep Port /etc/ssh/sshd_config"
    );
    assert_eq!(a.rationale, "Because.");
    assert_eq!(a.severity, Severity::High);
    assert!(a.has_bash_fix);
    assert_eq!(a.platforms, ["cpe:/o:t:1", "#machine"]);
    assert_eq!(a.checks.len(), 2);
    let oval: Vec<_> = a.oval_checks().collect();
    assert_eq!(oval.len(), 1);
    assert_eq!(oval[0].href, "t-oval.xml");
    assert_eq!(oval[0].name.as_deref(), Some("oval:t-a:def:1"));

    let b = catalog.rule("b").unwrap();
    assert!(!b.has_bash_fix, "an ansible fix is not a bash fix");
    assert_eq!(b.severity, Severity::Unknown);
    let base = catalog.profile("base").unwrap();
    assert_eq!(base.description, "The base profile");
    assert_eq!(catalog.profiles().len(), 5);
}

#[test]
fn malformed_content_is_an_error() {
    assert!(matches!(
        Catalog::parse("<a/>"),
        Err(ScapError::NoBenchmark)
    ));
    assert!(matches!(Catalog::parse("<a>"), Err(ScapError::Xml(_))));
    assert!(matches!(Catalog::parse(""), Err(ScapError::Xml(_))));
    let bad_bool = BENCHMARK.replace(r#"selected="false">"#, r#"selected="maybe">"#);
    assert!(matches!(
        Catalog::parse(&bad_bool),
        Err(ScapError::Invalid { .. })
    ));
    let truncated = &BENCHMARK[..BENCHMARK.len() / 2];
    assert!(Catalog::parse(truncated).is_err());
}

/// The cases of oscap's own requires/conflicts test, rewritten: oscap
/// deselects in one document-order pass, so `r3` (requires `r4`, which is
/// deselected later) stays while `r14` (same requirement, after) goes.
#[test]
fn requires_and_conflicts_follow_oscap() {
    let xml = r#"<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="b">
      <Profile id="p"><title>p</title>
        <select idref="r1" selected="false"/><select idref="g1" selected="false"/>
      </Profile>
      <Group id="g1">
        <Rule id="r1"/>
        <Rule id="r2"><conflicts idref="r3"/></Rule>
        <Group id="g1_inner"><Rule id="r1_3"/></Group>
      </Group>
      <Rule id="r3"><requires idref="r4"/></Rule>
      <Rule id="r4"><requires idref="r1"/></Rule>
      <Rule id="r5"><requires idref="r3"/></Rule>
      <Rule id="r6"><conflicts idref="r3"/></Rule>
      <Rule id="r7"><requires idref="r2"/><conflicts idref="g1"/></Rule>
      <Rule id="r8"><requires idref="g1"/></Rule>
      <Rule id="r9"><requires idref="r12"/><conflicts idref="g1"/></Rule>
      <Rule id="r10"><conflicts idref="g1"/><conflicts idref="r3"/></Rule>
      <Rule id="r11"><requires idref="g1_inner"/></Rule>
      <Group id="g12"><requires idref="g1_inner"/>
        <Rule id="r12"><conflicts idref="g1_inner"/></Rule>
        <Rule id="r13"/>
      </Group>
      <Rule id="r14"><requires idref="r4"/></Rule>
      <Rule id="r15"><requires idref="r1 r3"/></Rule>
      <Rule id="r16"><requires idref="r1 r3"/><requires idref="r5"/></Rule>
      <Rule id="r17"><requires idref="r1 r3"/><requires idref="g1"/></Rule>
      <Rule id="r18"><requires idref="no_such_item"/></Rule>
    </Benchmark>"#;
    let catalog = Catalog::parse(xml).unwrap();
    assert_eq!(
        ids(catalog.rules_of("p").unwrap()),
        ["r3", "r5", "r7", "r9", "r11", "r13", "r15", "r16"]
    );
}
