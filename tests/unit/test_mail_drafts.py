"""Customer emails stored as drafts (feeds/mail/drafts.py): a draft builds to the same bytes
every time, through a JSON round trip as stored, and to the message it describes."""

from __future__ import annotations

import json
from datetime import timedelta

import icalendar
import pytest

from calsync.feeds.mail.drafts import DraftError, compose
from tests.mail_helpers import DRAFT_DATE, parse_imip, sample_draft
from tests.mail_helpers import DRAFT_START as START


@pytest.mark.parametrize("customer", ["Chloé Lefèvre", "Smith, John", "Eve Bcc: x@example.org", "日本 太郎"])
def test_a_draft_builds_the_same_bytes_every_time_and_after_a_json_round_trip(customer: str) -> None:
    draft = sample_draft(customer)
    first = compose(draft)
    assert compose(draft) == first
    assert compose(json.loads(json.dumps(draft))) == first  # as the JSON column hands it back


def test_a_draft_builds_the_message_it_describes() -> None:
    draft = sample_draft()
    imip = parse_imip(compose(json.loads(json.dumps(draft))))
    assert imip.message["Message-ID"] == draft["message_id"]
    assert imip.message["To"].addresses[0].display_name == "Chloé Lefèvre"
    assert imip.message["Date"].datetime == DRAFT_DATE.replace(microsecond=0)
    assert imip.method == "REQUEST" and imip.content_type_method == "REQUEST"
    event = imip.event
    assert (str(event["UID"]), int(event["SEQUENCE"])) == ("u-1@calsync", 3)
    assert event.decoded("DTSTART") == START and event.decoded("DTEND") == START + timedelta(minutes=30)
    assert str(event["LOCATION"]) == "Salon 1"
    assert isinstance(imip.calendar, icalendar.Calendar)
    assert "10:00–10:30" in imip.text and "08:00–08:30" in imip.text  # where it was, where it is


def test_a_draft_of_an_unknown_shape_is_refused_with_what_to_do() -> None:
    newer = dict(sample_draft(), version=99)
    with pytest.raises(DraftError, match="upgrade calsync"):
        compose(newer)
    broken = sample_draft()
    del broken["itip"]["appointment"]["uid"]
    with pytest.raises(DraftError, match="incomplete"):
        compose(broken)
