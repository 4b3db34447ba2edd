"""The Apple configuration profile a logged-in user downloads from the web UI, from a real
`mailstack run --profile server` on loopback: read with plistlib, its host and ports are the
server's listeners (and a mail client logs in there), and it holds no password."""

from __future__ import annotations

import imaplib
import plistlib
import smtplib

import test_webui
from browser import browser_context, browser_login, screenshot
from mailserver import PASSWORD
from test_webui import World, log_in

PROFILE = "/account/mail.mobileconfig"

world = test_webui.world  # the same server fixture: one more private server, same users


def test_the_profile_names_the_real_listeners_and_no_password(world: World) -> None:
    with world.client() as client:
        assert client.get(PROFILE).headers["location"] == "/"  # not logged in: nothing
        assert log_in(client, "fay@example.com").status_code == 303
        answer = client.get(PROFILE)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-apple-aspen-config"
    assert answer.headers["content-disposition"].startswith("attachment;")
    assert PASSWORD.encode() not in answer.content
    profile = plistlib.loads(answer.content)
    assert profile["PayloadType"] == "Configuration"
    [account] = profile["PayloadContent"]
    secrets = {key for key in account if "Password" in key}
    assert secrets == {"OutgoingPasswordSameAsIncomingPassword"}
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAddress"] == "fay@example.com"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["IncomingMailServerHostName"] == "mx.example.com"  # POSTFIX_myhostname
    assert account["OutgoingMailServerHostName"] == "mx.example.com"
    assert account["IncomingMailServerPortNumber"] == world.ports.imaps  # implicit TLS first
    assert account["OutgoingMailServerPortNumber"] == world.ports.submissions
    assert account["IncomingMailServerUseSSL"] is True
    assert account["IncomingMailServerUsername"] == "fay@example.com"
    # what the profile says works: TLS on those ports, with the user's password
    context = world.server.tls_context()
    port = account["IncomingMailServerPortNumber"]
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30) as imap:
        assert imap.login(account["IncomingMailServerUsername"], PASSWORD)[0] == "OK"
    port = account["OutgoingMailServerPortNumber"]
    with smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=30) as smtp:
        assert smtp.login(account["OutgoingMailServerUsername"], PASSWORD)[0] == 235


def test_the_account_page_links_the_profile(world: World) -> None:
    with browser_context() as context:
        page = browser_login(context, world.base, "gus@example.com", PASSWORD)
        screenshot(page, __name__, "account")
        with page.expect_download() as started:
            page.get_by_role("link", name="Set up an iPhone, iPad or Mac").click()
        download = started.value
        assert download.suggested_filename == "mail.mobileconfig"
        profile = plistlib.loads(download.path().read_bytes())
    assert profile["PayloadContent"][0]["EmailAddress"] == "gus@example.com"
