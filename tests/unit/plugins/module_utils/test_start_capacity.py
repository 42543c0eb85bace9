"""start_capacity: a start without capacity - the pauses between tries of the same type within
the bound, the types a stopped instance may change to in its zone, and the sentences."""

from __future__ import annotations

import pytest

from plugins.module_utils.start_capacity import (
    changed_note,
    fallback_types,
    no_capacity_message,
    quota_message,
    retry_delays,
    waited,
)

CANDIDATES = ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"]
EVERYWHERE = {t: ["us-east-1a", "us-east-1b"] for t in CANDIDATES}


# --- retry_delays --------------------------------------------------------------------------

@pytest.mark.parametrize("bound", [0, 0.0, -5, None])
def test_no_bound_is_no_retry(bound) -> None:
    assert retry_delays(bound) == []


@pytest.mark.parametrize("bound", [1, 3, 7.5, 60, 300, 600, 3600])
def test_the_pauses_add_up_to_the_bound(bound: float) -> None:
    delays = retry_delays(bound)
    assert sum(delays) == pytest.approx(bound, abs=0.01)
    assert all(d > 0 for d in delays)


def test_the_default_five_minutes_grow_from_ten_seconds_to_a_minute() -> None:
    assert retry_delays(300) == [10, 20, 40, 60, 60, 60, 50]


def test_a_short_bound_still_retries_a_few_times() -> None:
    # Tests use seconds: 3 s gives three tries after the first (0.5 s, then 1 s, then the rest).
    assert retry_delays(3) == [0.5, 1.0, 1.5]


def test_pauses_never_pass_a_minute_and_never_shrink_but_the_last() -> None:
    delays = retry_delays(3600)
    assert max(delays) == 60
    assert delays[:-1] == sorted(delays[:-1])


def test_a_tiny_remainder_joins_the_pause_before_it() -> None:
    # 10 s: 0.5, 1, 2, 4 = 7.5, then 2.5 (cut from 8); 7.6 s: 0.5+1+2+4 = 7.5 and 0.1 left,
    # shorter than the first pause: it goes onto the 4 s pause.
    assert retry_delays(10) == [0.5, 1.0, 2.0, 4.0, 2.5]
    assert retry_delays(7.6) == [0.5, 1.0, 2.0, 4.1]


# --- fallback_types ------------------------------------------------------------------------

def test_the_other_candidates_in_order_that_the_zone_offers() -> None:
    assert fallback_types("g6.xlarge", CANDIDATES, EVERYWHERE, "us-east-1a") == ["g5.xlarge", "g4dn.xlarge"]


def test_a_type_the_zone_does_not_offer_is_skipped() -> None:
    offered = {"g6.xlarge": ["us-east-1a"], "g5.xlarge": ["us-east-1b"], "g4dn.xlarge": ["us-east-1a"]}
    assert fallback_types("g6.xlarge", CANDIDATES, offered, "us-east-1a") == ["g4dn.xlarge"]


def test_an_instance_on_a_fallback_type_may_go_back_to_the_preferred_one() -> None:
    assert fallback_types("g5.xlarge", CANDIDATES, EVERYWHERE, "us-east-1b") == ["g6.xlarge", "g4dn.xlarge"]


def test_nothing_offered_or_no_other_candidate_is_nothing() -> None:
    assert fallback_types("g6.xlarge", CANDIDATES, {"g6.xlarge": ["us-east-1a"]}, "us-east-1a") == []
    assert fallback_types("g6.xlarge", ["g6.xlarge"], EVERYWHERE, "us-east-1a") == []
    assert fallback_types("g6.xlarge", [], EVERYWHERE, "us-east-1a") == []


def test_a_candidate_named_twice_is_tried_once() -> None:
    assert fallback_types("g6.xlarge", ["g6.xlarge", "g5.xlarge", "g5.xlarge", ""], EVERYWHERE,
                          "us-east-1a") == ["g5.xlarge"]


# --- sentences -----------------------------------------------------------------------------

def test_waited_counts_tries_and_whole_seconds() -> None:
    assert waited(1, 0.2) == "1 try"
    assert waited(3, 45.4) == "3 tries over 45 s"


def test_the_changed_note_says_what_stays_and_how_to_go_back() -> None:
    note = changed_note("dl", "i-0abc", "g6.xlarge", "g5.xlarge", "us-east-1a", "us-east-1", "g6.xlarge", 8, 300)
    assert note.startswith("AWS had no g6.xlarge capacity in us-east-1a (8 tries over 300 s), so lab dl's instance "
                           "i-0abc was changed from g6.xlarge to g5.xlarge while stopped and started;")
    assert "its disk and Elastic IP are the same" in note
    assert ("To go back to g6.xlarge later, run stop.yml, then aws ec2 modify-instance-attribute --region us-east-1 "
            "--instance-id i-0abc --instance-type Value=g6.xlarge, then start.yml.") in note


def test_nothing_fits_says_what_was_tried_and_that_nothing_changed() -> None:
    message = no_capacity_message("i-0abc", "g6.xlarge", "us-east-1a", ["g5.xlarge", "g4dn.xlarge"], 4, 3.2, True,
                                  restored="g6.xlarge")
    assert message.startswith("AWS has no capacity in us-east-1a for the lab's instance i-0abc: tried g6.xlarge "
                              "(InsufficientInstanceCapacity, 4 tries over 3 s), then as g5.xlarge, g4dn.xlarge; "
                              "it stays stopped (its type is g6.xlarge again) and nothing changed.")
    assert "gpu_lab_start_change_type" not in message


def test_no_fallback_in_the_zone_is_said() -> None:
    message = no_capacity_message("i-0abc", "g6.xlarge", "us-east-1a", [], 1, 0, True)
    assert ("tried g6.xlarge (InsufficientInstanceCapacity, 1 try), and no other candidate type is offered in "
            "that zone; it stays stopped and nothing changed.") in message


def test_with_type_changes_off_it_says_how_to_turn_them_on() -> None:
    message = no_capacity_message("i-0abc", "g6.xlarge", "us-east-1a", [], 1, 0, False)
    assert "tried g6.xlarge (InsufficientInstanceCapacity, 1 try); it stays stopped and nothing changed." in message
    assert "set gpu_lab_start_change_type to true" in message


def test_a_quota_is_named_as_the_quota() -> None:
    message = quota_message("i-0abc", "g6.xlarge", "VcpuLimitExceeded",
                            "Running On-Demand G and VT instances (L-DB2E81BA)")
    assert "this is the quota, not capacity" in message
    assert "Running On-Demand G and VT instances (L-DB2E81BA)" in message
    assert "nothing changed" in message
