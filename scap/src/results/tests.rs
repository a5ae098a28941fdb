//! Results on a small hand-written ARF; real oscap output is in
//! `tests/results.rs`.

use super::*;

const ARF_DOC: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<arf:asset-report-collection xmlns:arf="http://scap.nist.gov/schema/asset-reporting-format/1.1">
 <arf:report-requests><arf:report-request id="collection1"><arf:content><big/></arf:content></arf:report-request></arf:report-requests>
 <arf:reports>
  <arf:report id="xccdf1"><arf:content>
   <TestResult xmlns="http://checklists.nist.gov/xccdf/1.2" id="tr" start-time="t0" end-time="t1">
    <benchmark href="#b" id="xccdf_t_benchmark_B"/>
    <profile idref="xccdf_t_profile_p"/>
    <rule-result idref="xccdf_t_rule_bad"><result>fail</result>
     <check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><check-content-ref name="oval:t:def:1" href="#oval0"/></check>
    </rule-result>
    <rule-result idref="xccdf_t_rule_good"><result>pass</result>
     <check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><check-content-ref name="oval:t:def:3" href="#oval0"/></check>
    </rule-result>
    <rule-result idref="xccdf_t_rule_ocil"><result>notchecked</result><message severity="info">No candidate or applicable check found.</message></rule-result>
    <rule-result idref="xccdf_t_rule_other"><result>notselected</result></rule-result>
   </TestResult>
  </arf:content></arf:report>
  <arf:report id="oval0"><arf:content>
   <oval_results xmlns="http://oval.mitre.org/XMLSchema/oval-results-5">
    <oval_definitions xmlns="http://oval.mitre.org/XMLSchema/oval-definitions-5" xmlns:ind="http://oval.mitre.org/XMLSchema/oval-definitions-5#independent">
     <definitions>
      <definition id="oval:t:def:1"><metadata><title>Root login is off</title></metadata>
       <criteria operator="AND" comment="configured">
        <extend_definition comment="loops back" definition_ref="oval:t:def:2"/>
        <criterion comment="PermitRootLogin is no" test_ref="oval:t:tst:1"/>
        <criterion comment="fine" test_ref="oval:t:tst:2"/>
       </criteria>
      </definition>
      <definition id="oval:t:def:2"><metadata><title>Loop</title></metadata>
       <criteria><extend_definition comment="back to 1" definition_ref="oval:t:def:1"/></criteria>
      </definition>
     </definitions>
     <tests>
      <ind:textfilecontent54_test id="oval:t:tst:1" check="all" comment="root login">
       <ind:object object_ref="oval:t:obj:1"/><ind:state state_ref="oval:t:ste:1"/>
      </ind:textfilecontent54_test>
     </tests>
     <objects>
      <ind:textfilecontent54_object id="oval:t:obj:1">
       <ind:filepath>/etc/ssh/sshd_config</ind:filepath>
       <ind:pattern operation="pattern match">^PermitRootLogin (.*)$</ind:pattern>
      </ind:textfilecontent54_object>
     </objects>
     <states>
      <ind:textfilecontent54_state id="oval:t:ste:1"><ind:subexpression>no</ind:subexpression></ind:textfilecontent54_state>
     </states>
    </oval_definitions>
    <results><system>
     <definitions>
      <definition definition_id="oval:t:def:1" result="false">
       <criteria operator="AND" result="false">
        <extend_definition definition_ref="oval:t:def:2" result="false"/>
        <criterion test_ref="oval:t:tst:1" result="false"/>
        <criterion test_ref="oval:t:tst:2" negate="true" result="true"/>
       </criteria>
      </definition>
      <definition definition_id="oval:t:def:2" result="false">
       <criteria result="false"><extend_definition definition_ref="oval:t:def:1" result="false"/></criteria>
      </definition>
      <definition definition_id="oval:t:def:3" result="true"><criteria result="true"/></definition>
     </definitions>
     <tests>
      <test test_id="oval:t:tst:1" check="all" check_existence="at_least_one_exists" result="false">
       <tested_item item_id="7" result="false"/>
      </test>
     </tests>
     <oval_system_characteristics xmlns="http://oval.mitre.org/XMLSchema/oval-system-characteristics-5" xmlns:ind-sys="http://oval.mitre.org/XMLSchema/oval-system-characteristics-5#independent">
      <collected_objects><object id="oval:t:obj:1" flag="complete"><reference item_ref="7"/></object></collected_objects>
      <system_data>
       <ind-sys:textfilecontent_item id="7" status="exists">
        <ind-sys:filepath>/etc/ssh/sshd_config</ind-sys:filepath>
        <ind-sys:text>PermitRootLogin yes</ind-sys:text>
        <ind-sys:subexpression>yes</ind-sys:subexpression>
       </ind-sys:textfilecontent_item>
      </system_data>
     </oval_system_characteristics>
    </system></results>
   </oval_results>
  </arf:content></arf:report>
 </arf:reports>
</arf:asset-report-collection>"##;

#[test]
fn statuses_and_header() {
    let evaluation = Evaluation::parse(ARF_DOC).unwrap();
    assert_eq!(
        evaluation.benchmark_id.as_deref(),
        Some("xccdf_t_benchmark_B")
    );
    assert_eq!(evaluation.profile_id.as_deref(), Some("xccdf_t_profile_p"));
    assert_eq!(evaluation.rules().len(), 4);
    assert_eq!(evaluation.evaluated().count(), 3);
    assert_eq!(evaluation.rule("bad").unwrap().status, RuleStatus::Fail);
    assert_eq!(
        evaluation.rule("xccdf_t_rule_good").unwrap().status,
        RuleStatus::Pass
    );
    assert!(
        evaluation.rule("good").unwrap().details.is_empty(),
        "a pass carries no details"
    );
    let ocil = evaluation.rule("ocil").unwrap();
    assert_eq!(ocil.status, RuleStatus::NotChecked);
    assert_eq!(ocil.messages, ["No candidate or applicable check found."]);
}

#[test]
fn failure_details_walk_from_definition_to_items() {
    let evaluation = Evaluation::parse(ARF_DOC).unwrap();
    let bad = evaluation.rule("bad").unwrap();
    assert_eq!(bad.details.len(), 1);
    let check = &bad.details[0];
    assert_eq!(check.title.as_deref(), Some("Root login is off"));
    assert_eq!(check.result, "false");
    let Some(CriteriaNode::Criteria {
        children, comment, ..
    }) = &check.criteria
    else {
        panic!("{check:?}")
    };
    assert_eq!(comment.as_deref(), Some("configured"));
    // the cycle def:1 → def:2 → def:1 stops at def:1
    let CriteriaNode::ExtendDefinition {
        criteria: Some(inner),
        ..
    } = &children[0]
    else {
        panic!("{:?}", children[0])
    };
    let CriteriaNode::Criteria {
        children: inner, ..
    } = inner.as_ref()
    else {
        panic!()
    };
    assert!(matches!(
        &inner[0],
        CriteriaNode::ExtendDefinition { criteria: None, .. }
    ));

    let CriteriaNode::Criterion {
        test: Some(test),
        comment,
        ..
    } = &children[1]
    else {
        panic!("{:?}", children[1])
    };
    assert_eq!(comment.as_deref(), Some("PermitRootLogin is no"));
    assert_eq!(test.kind, "textfilecontent54_test");
    assert_eq!(test.check_existence.as_deref(), Some("at_least_one_exists"));
    let object = test.object.as_ref().unwrap();
    assert_eq!(object.flag.as_deref(), Some("complete"));
    assert_eq!(
        object.entities[1].operation.as_deref(),
        Some("pattern match")
    );
    assert_eq!(object.items.len(), 1);
    assert_eq!(object.items[0].result.as_deref(), Some("false"));
    assert_eq!(object.items[0].fields[1].value, "PermitRootLogin yes");
    assert_eq!(test.states[0].entities[0].value, "no");
    // a criterion that came out true is listed without its test
    assert!(matches!(
        &children[2],
        CriteriaNode::Criterion {
            test: None,
            negate: true,
            ..
        }
    ));

    let text = bad.details_text(8 * 1024);
    assert!(text.starts_with("rule bad: fail\n"), "{text}");
    for needle in [
        "definition oval:t:def:1 \"Root login is off\": false",
        "object oval:t:obj:1 textfilecontent54_object [complete]: filepath=\"/etc/ssh/sshd_config\"",
        "text=\"PermitRootLogin yes\"",
        "expected oval:t:ste:1 textfilecontent54_state: subexpression=\"no\"",
        "NOT criterion oval:t:tst:2 \"fine\": true",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let short = bad.details_text(64);
    assert!(
        short.len() <= 64 && short.ends_with("[truncated]\n"),
        "{short}"
    );
}

#[test]
fn garbage_is_an_error() {
    for bad in [
        "",
        "not xml at all",
        "<a>",
        "<a/>",
        &ARF_DOC[..ARF_DOC.len() / 3],
        &ARF_DOC[..ARF_DOC.len() - 10],
        "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
    ] {
        assert!(Evaluation::parse(bad).is_err(), "accepted {bad:?}");
    }
    let odd_status = ARF_DOC.replace("<result>pass</result>", "<result>great</result>");
    assert!(matches!(
        Evaluation::parse(&odd_status),
        Err(ScapError::Invalid { .. })
    ));
    let no_idref = ARF_DOC.replace("rule-result idref=\"xccdf_t_rule_good\"", "rule-result");
    assert!(matches!(
        Evaluation::parse(&no_idref),
        Err(ScapError::Invalid { .. })
    ));
}

#[test]
fn dangling_references_give_partial_details_not_panics() {
    let dangling = ARF_DOC
        .replace(
            "<reference item_ref=\"7\"/>",
            "<reference item_ref=\"99\"/>",
        )
        .replace("tested_item item_id=\"7\"", "tested_item item_id=\"98\"")
        .replace("name=\"oval:t:def:1\"", "name=\"oval:t:def:404\"");
    let evaluation = Evaluation::parse(&dangling).unwrap();
    let bad = evaluation.rule("bad").unwrap();
    assert_eq!(bad.details[0].criteria, None);
    assert!(bad.details_text(1024).contains("oval:t:def:404"));
}

#[test]
fn deep_nesting_is_an_error_or_a_result_never_a_crash() {
    let depth = 200_000;
    let deep = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(Evaluation::parse(&deep).is_err());
    assert!(crate::Catalog::parse(&deep).is_err());
    // deep criteria inside a real-looking ARF: the walk stops at its depth cap
    let nested = format!(
        "{}<criterion test_ref=\"oval:t:tst:1\" result=\"false\"/>{}",
        "<criteria operator=\"AND\" result=\"false\">".repeat(5_000),
        "</criteria>".repeat(5_000)
    );
    let arf = ARF_DOC.replacen(
        "<criteria operator=\"AND\" result=\"false\">",
        &format!("<criteria operator=\"AND\" result=\"false\">{nested}"),
        1,
    );
    let evaluation = Evaluation::parse(&arf).unwrap();
    assert!(evaluation.rule("bad").unwrap().details_text(4096).len() <= 4096);
}
