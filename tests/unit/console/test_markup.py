"""The message page's pure HTML helpers: titled HL7 fields, marked evidence, escaping (listener/console/markup.py)."""

from __future__ import annotations

from markupsafe import Markup

from listener.console.markup import field_names, highlight, hl7_segments, message_version, pretty_json

MESSAGE = (
    "MSH|^~\\&|RIS|HOSP|OVERREAD|READCO|20260302090000||ORU^R01|C1|P|2.5.1\r"
    "PID|1||MRN<1>^^^HOSP^MR||DOE&SONS^JANE\r"
    "ZXY|a|b\r"
)


def test_the_version_is_msh_12s_first_component() -> None:
    assert message_version(MESSAGE) == "2.5.1"
    assert message_version(MESSAGE.replace("|2.5.1", "|2.3^USA")) == "2.3"
    assert message_version("PID|1\r") == ""
    assert message_version("MSH|^~\\&|RIS\r") == ""


def test_field_names_come_from_hl7apy_for_the_version_or_the_default() -> None:
    assert field_names("PID", "2.5.1")[3] == "Patient Identifier List"
    assert field_names("OBR", "2.3")[4] == "Universal Service Identifier"
    # An unknown version falls back to 2.5; an unknown segment has no names.
    assert field_names("PID", "9.9")[5] == "Patient Name"
    assert field_names("ZXY", "2.5") == {}


def test_each_field_is_a_titled_span_and_values_are_escaped() -> None:
    html = hl7_segments(MESSAGE)
    assert isinstance(html, Markup)
    lines = html.split("\n")
    assert len(lines) == 3
    # MSH-1 is the separator, so the first field after it is MSH-2.
    assert '<span title="MSH-2 Encoding Characters">^~\\&amp;</span>' in lines[0]
    assert '<span title="MSH-10 Message Control Id">C1</span>' in lines[0]
    assert '<span title="PID-3 Patient Identifier List">MRN&lt;1&gt;^^^HOSP^MR</span>' in lines[1]
    assert '<span title="PID-5 Patient Name">DOE&amp;SONS^JANE</span>' in lines[1]
    assert lines[2] == '<span class="seg">ZXY</span>|<span title="ZXY-1">a</span>|<span title="ZXY-2">b</span>'
    assert "<1>" not in html


def test_overlapping_spans_merge_into_one_mark_naming_both_and_text_is_escaped() -> None:
    text = 'a <b> & "c" d'
    html = highlight(text, [(2, 5, "rule.one"), (4, 7, "rule.two"), (10, 12, "rule.one")])
    assert html == (
        'a <mark title="rule.one; rule.two">&lt;b&gt; &amp;</mark> &#34;c<mark title="rule.one">&#34; </mark>d'
    )


def test_highlight_keeps_every_character_once_and_clips_spans() -> None:
    text = "x<y>&z"
    spans = [(0, 2, "a"), (1, 3, "b"), (5, 99, "c"), (-4, 0, "d"), (4, 4, "e")]
    html = highlight(text, spans)
    assert html == '<mark title="a; b">x&lt;y</mark>&gt;&amp;<mark title="c">z</mark>'
    assert highlight("plain", []) == "plain"
    # A title with markup in it is escaped too.
    assert highlight("ab", [(0, 1, '<i>"r"</i>')]) == '<mark title="&lt;i&gt;&#34;r&#34;&lt;/i&gt;">a</mark>b'


def test_json_bodies_are_indented_and_other_text_left_as_is() -> None:
    assert pretty_json('{"a":[1,{"b":"<x>"}]}') == '{\n  "a": [\n    1,\n    {\n      "b": "<x>"\n    }\n  ]\n}'
    assert pretty_json('{"status":201}\n{"a":1}') == '{\n  "status": 201\n}\n{\n  "a": 1\n}'
    assert pretty_json("not json") == "not json"
    assert pretty_json('{"a":1}\nnot json') == '{"a":1}\nnot json'
