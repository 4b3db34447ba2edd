"""Queue ids as the REST API, the web UI and root's `queue delete` accept them, and the
request folder through which the worker asks root to delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack.errors import InvalidInput
from mailstack.mailqueue import DeleteRequests, check_queue_id, is_queue_id
from mailstack.mailqueue.requests import pending_folder, take_requested

#: short ids as Postfix 3.7 makes them by default, long ones with enable_long_queue_ids
GOOD = ["4C3F81A2B7", "3C9A05E1D3E", "A1B2C3", "3Pt2mN2VXxznjll", "4ZkQSv6Rx5zPbD6"]
BAD = [
    "",
    "ALL",  # postsuper -d ALL would empty the queue
    "all",
    "ABCDE",  # too short
    "4c3f81a2b7",  # lower-case hex is neither shape
    "4C3F81A2B7 ",
    "4C3F81A2B7\n3C9A05E1D3E",
    "../../etc/passwd",
    "-d",
    "3Pt2mN2VXxznjllz",  # nothing after the separator
    "3Pt2mN2VXaznjll",  # a vowel
    "A" * 41,
    "4C3F81A2B7/",
]


@pytest.mark.parametrize("queue_id", GOOD)
def test_postfix_queue_ids_pass(queue_id: str) -> None:
    assert is_queue_id(queue_id)
    assert check_queue_id(queue_id) == queue_id


@pytest.mark.parametrize("queue_id", BAD)
def test_anything_else_is_refused_naming_the_field(queue_id: str) -> None:
    assert not is_queue_id(queue_id)
    with pytest.raises(InvalidInput) as caught:
        check_queue_id(queue_id)
    assert caught.value.field == "queue_id"


def test_requests_reach_root_once_and_junk_names_are_dropped(tmp_path: Path) -> None:
    trigger = tmp_path / "queue-delete"
    asker = DeleteRequests(trigger)
    asker.request("4C3F81A2B7")
    asker.request("3Pt2mN2VXxznjll")
    assert trigger.exists()
    with pytest.raises(InvalidInput):
        asker.request("ALL")
    (pending_folder(trigger) / "ALL").touch()  # written by something else than request()
    assert take_requested(trigger) == ["3Pt2mN2VXxznjll", "4C3F81A2B7"]
    assert list(pending_folder(trigger).iterdir()) == []
    assert take_requested(trigger) == []


def test_a_request_folder_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "4C3F81A2B7").touch()
    trigger = tmp_path / "queue-delete"
    pending_folder(trigger).symlink_to(elsewhere)
    with pytest.raises(OSError, match="Not a directory"):
        take_requested(trigger)
    assert (elsewhere / "4C3F81A2B7").exists()


def test_no_folder_means_nothing_asked(tmp_path: Path) -> None:
    assert take_requested(tmp_path / "queue-delete") == []
