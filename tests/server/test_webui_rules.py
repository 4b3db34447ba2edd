"""Sieve in the users' web UI, through a real `mailstack run --profile server` on loopback:
rules made with the form file real mail (sent to the MX, read back over IMAP), hand-written
scripts are checked by sievec and refused with its message, and the form never touches a
script it did not write. Driven by headless Chromium and by httpx posting forms as a browser
does; screenshots of each page go to the test artifacts.
"""

from __future__ import annotations

import test_webui
from browser import browser_context, browser_login, screenshot
from mailserver import (
    PASSWORD,
    deliver,
    imap_session,
    subjects,
    wait_for_subject,
)
from test_webui import World, account_token, log_in

from mailstack.sieve.rules import Rule, parse_rules

world = test_webui.world  # the same server fixture: one more private server, same users


def test_a_rule_added_in_the_browser_files_mail_from_that_sender(world: World) -> None:
    """The form's rule "from boss@example.org -> Boss" files the boss's mail into Boss (made
    for it) and leaves other mail in the INBOX."""
    with browser_context() as context:
        page = browser_login(context, world.base, "ann@example.com", PASSWORD)
        page.get_by_role("link", name="Filter rules").click()
        page.wait_for_url(world.base + "/account/sieve")
        screenshot(page, __name__, "empty")
        page.get_by_label("Mail from").fill("boss@example.org")
        page.get_by_label("goes into the folder").fill("Boss")
        page.get_by_role("button", name="Add rule").click()
        page.get_by_role("status").wait_for()
        assert "saved and are in use" in page.get_by_role("status").inner_text()
        assert "boss@example.org" in page.locator("#rules").inner_text()
        screenshot(page, __name__, "rule-added")
        page.get_by_role("link", name="See these rules as a Sieve script").click()
        page.wait_for_url("**/account/sieve/edit?name=rules")
        assert 'fileinto :create "Boss";' in page.get_by_label("Sieve script").input_value()
        screenshot(page, __name__, "rules-as-script")
    port = world.ports.smtp
    assert deliver(port, "boss@example.org", ["ann@example.com"], "from the boss") == {}
    assert deliver(port, "friend@remote.test", ["ann@example.com"], "from a friend") == {}
    imap = world.ports.imap
    boss = wait_for_subject(world.server, imap, "ann@example.com", "from the boss", "Boss")
    inbox = wait_for_subject(world.server, imap, "ann@example.com", "from a friend")
    assert "from a friend" not in boss
    assert "from the boss" not in inbox


def test_a_raw_script_that_does_not_compile_is_refused_with_the_error(world: World) -> None:
    """sievec's message is shown, the text typed is still there, and nothing is stored."""
    broken = 'require ["fileinto"];\nif header :contains "subject" "x" {\n  fileinto "X"\n}\n'
    with browser_context() as context:
        page = browser_login(context, world.base, "ben@example.com", PASSWORD)
        page.goto(world.base + "/account/sieve")
        page.get_by_role("link", name="Write a new script").click()
        page.get_by_label("Name").fill("mine")
        page.get_by_label("Sieve script").fill(broken)
        page.get_by_role("button", name="Save script").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert "does not compile, nothing stored" in alert.inner_text()
        assert "line 4" in alert.inner_text()  # where sievec found the missing `;`
        assert page.get_by_label("Sieve script").input_value() == broken
        screenshot(page, __name__, "syntax-error")
    assert world.store.list_scripts("ben@example.com") == []


def test_a_raw_script_that_compiles_is_stored_and_runs(world: World) -> None:
    script = 'require ["fileinto", "mailbox"];\nif header :contains "subject" "[news]" {\n'
    script += '  fileinto :create "News";\n}\n'
    with world.client() as client:
        assert log_in(client, "cid@example.com").status_code == 303
        answer = client.post(
            "/account/sieve/save",
            data={
                "csrf": account_token(client),
                "name": "by hand",
                "content": script.replace("\n", "\r\n"),
                "activate": "on",
            },
        )
        assert answer.status_code == 303, answer.text
        page = client.get("/account/sieve")
        # a hand-written script opens in the raw editor, not the form
        assert "/account/sieve/edit?name=by%20hand" in page.text
    stored = world.store.get_script("cid@example.com", "by hand")
    assert stored.active
    assert parse_rules(stored.content or "") is None
    assert deliver(world.ports.smtp, "list@remote.test", ["cid@example.com"], "[news] 1") == {}
    wait_for_subject(world.server, world.ports.imap, "cid@example.com", "[news] 1", "News")


def test_quotes_and_backslashes_typed_in_the_form_match_literally(world: World) -> None:
    """A subject and folder with `"` and `\\` stay inside their Sieve strings: the rule files
    exactly the mail whose subject holds that text."""
    tricky = 'say "hi" \\ "bye'
    folder = 'Odd "one"'
    with world.client() as client:
        assert log_in(client, "dee@example.com").status_code == 303
        form = {"csrf": account_token(client), "subject": tricky, "folder": folder}
        answer = client.post("/account/sieve/rule", data=form)
        assert answer.status_code == 303, answer.text
    script = world.store.get_script("dee@example.com", "rules").content or ""
    assert parse_rules(script) == [Rule(folder, "", tricky)]
    port = world.ports.smtp
    assert deliver(port, "a@remote.test", ["dee@example.com"], f"re: {tricky}!") == {}
    assert deliver(port, "a@remote.test", ["dee@example.com"], 'say "hi" / "bye') == {}
    imap_folder = folder.replace('"', '\\"')  # the harness puts it in an IMAP quoted string
    wait_for_subject(
        world.server, world.ports.imap, "dee@example.com", f"re: {tricky}!", imap_folder
    )
    wait_for_subject(world.server, world.ports.imap, "dee@example.com", 'say "hi" / "bye')


def test_the_form_leaves_hand_edited_scripts_alone(world: World) -> None:
    """A rules script changed by hand is no longer the form's: adding a rule to it is refused
    and the script stays as it was."""
    edited = world.store.put_script(
        "eve@example.com", "rules", 'require "fileinto";\nfileinto "All";\n', activate=True
    )
    with world.client() as client:
        assert log_in(client, "eve@example.com").status_code == 303
        page = client.get("/account/sieve")
        assert "was written by hand" in page.text
        form = {"csrf": account_token(client), "sender": "x@y.example", "folder": "Y"}
        answer = client.post("/account/sieve/rule", data=form)
        assert answer.status_code == 400
        assert "written by hand" in answer.text
    after = world.store.get_script("eve@example.com", "rules")
    assert after.content == 'require "fileinto";\nfileinto "All";\n'
    assert after.version == edited.version


def test_scripts_are_activated_deactivated_and_deleted_from_the_list(world: World) -> None:
    world.store.put_script("eve@example.com", "spare", "keep;\n")
    with world.client() as client:
        assert log_in(client, "eve@example.com").status_code == 303
        token = account_token(client)
        answer = client.post("/account/sieve/delete", data={"csrf": token, "name": "rules"})
        assert answer.status_code == 400  # the active one
        assert "deactivate it first" in answer.text
        answer = client.post("/account/sieve/activate", data={"csrf": token, "name": "spare"})
        assert answer.status_code == 303
        assert world.store.get_script("eve@example.com", "spare").active
        answer = client.post("/account/sieve/delete", data={"csrf": token, "name": "rules"})
        assert answer.status_code == 303
        answer = client.post("/account/sieve/activate", data={"csrf": token, "name": ""})
        assert answer.status_code == 303
        assert "No script is in use" in client.get("/account/sieve").text
    assert [(s.name, s.active) for s in world.store.list_scripts("eve@example.com")] == [
        ("spare", False)
    ]


def test_sieve_posts_need_the_session_and_its_token(world: World) -> None:
    before = world.store.list_scripts("ann@example.com")
    form = {"sender": "x@evil.example", "folder": "Evil"}
    with world.client() as client:
        answer = client.post("/account/sieve/rule", data=form)
        assert answer.status_code == 303  # no session: to the login page
        assert answer.headers["location"] == "/"
        assert log_in(client, "ann@example.com").status_code == 303
        assert client.post("/account/sieve/rule", data=form).status_code == 403
        answer = client.post("/account/sieve/delete", data={"name": "rules"})
        assert answer.status_code == 403
    assert world.store.list_scripts("ann@example.com") == before
    with imap_session(world.server, world.ports.imap, "ann@example.com", PASSWORD) as imap:
        assert "from the boss" not in subjects(imap)
