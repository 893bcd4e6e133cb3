"""The content filter (SPEC §6.3): secrets are rejected, ordinary talk is not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engram.pipeline.content_filter import DEFAULT_REASONS, ContentFilter, Rejection

# Secrets below are well-known documentation examples or random-looking strings
# assembled at run time, so no scanner mistakes this file for a leak.
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GH_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
OPENAI = "sk-" + "proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
OPENAI_LEGACY = "sk-" + "4f8Gh2Jk9Lm3Np7Qr1St6Vw0Xy5Za8Bc2De4Fg6Hi8Jk0Lm"
ANTHROPIC = "sk-" + "ant-api03-AbCdEf0123456789GhIjKlMnOpQrStUv-wx_yz"
SLACK = "xoxb-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_" + "live_4eC39HqLyjWDarjtT1zdp7dc"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
JWT = (
    "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7x\n-----END RSA PRIVATE KEY-----"
OPENSSH = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"


@pytest.fixture(scope="module")
def cf() -> ContentFilter:
    return ContentFilter()


@pytest.mark.parametrize(
    ("text", "reason", "secret"),
    [
        (f"here is my key:\n{PEM}", "private_key", "MIIEpAIBAAKCAQEA7x"),
        (f"deploy key\n{OPENSSH}\n", "private_key", "b3BlbnNzaC1rZXktdjEAAAAA"),
        (f"export AWS_ACCESS_KEY_ID={AWS_ID}", "aws_access_key", AWS_ID),
        (f"the key is ASIA{'Y' * 4}{'3' * 12} for the temp session", "aws_access_key", "ASIAYYYY"),
        (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_key", AWS_SECRET),
        (f'"SecretAccessKey": "{AWS_SECRET}"', "aws_secret_key", AWS_SECRET),
        (f"use token {GH} for the CI", "github_token", GH),
        (f"GITHUB_TOKEN={GH_PAT}", "github_token", GH_PAT),
        (f"my openai key {OPENAI} works", "openai_key", OPENAI),
        (f"OPENAI_API_KEY={OPENAI_LEGACY}", "openai_key", OPENAI_LEGACY),
        (f"claude key: {ANTHROPIC}", "anthropic_key", ANTHROPIC),
        (f"bot token {SLACK}", "slack_token", SLACK),
        (f"stripe: {STRIPE}", "stripe_key", STRIPE),
        (f"maps key {GOOGLE}", "google_api_key", GOOGLE),
        (f"Authorization: Bearer {JWT}", "jwt", JWT),
        ("password: hunter2", "password_assignment", "hunter2"),
        ("Password: swordfish", "password_assignment", "swordfish"),
        ("my password is hunter2", "password_assignment", "hunter2"),
        ("My gmail password is 'correct horse battery'", "password_assignment", "correct horse"),
        ("the wifi password for the cabin is Tr0ub4dor&3", "password_assignment", "Tr0ub4dor"),
        ("my bank pin is 4821", "password_assignment", "4821"),
        ("DB_PASSWORD=s3cr3t!", "password_assignment", "s3cr3t"),
        ('{"user": "bob", "password": "hunter2"}', "password_assignment", "hunter2"),
        ("curl 'https://x.example/login?user=bob&pwd=letmein99'", "password_assignment", "letmein99"),
        ("connect to postgres://admin:Zx9!pq@db.internal:5432/app", "password_assignment", "Zx9!pq"),
        ("mongodb+srv://app:averylongsecret@cluster0.example.net", "password_assignment", "averylongsecret"),
    ],
)
def test_secrets_are_rejected_without_echoing_them(cf: ContentFilter, text: str, reason: str, secret: str) -> None:
    rejection = cf.check(text)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason
    assert secret not in rejection.message
    assert secret not in str(rejection)
    assert rejection.reason in DEFAULT_REASONS


@pytest.mark.parametrize(
    "text",
    [
        "I forgot my password",
        "I forgot my password again, so annoying",
        "the password policy requires 8 chars",
        "Passwords must be at least 12 characters long.",
        "my password is too weak, I need a new one",
        "my password is 16 characters long",
        "my password is expired",
        "The password: keep it somewhere safe and never share it",
        "Password: ********",
        "password = getpass.getpass()",
        'password = os.environ["DB_PASSWORD"]',
        "if password == confirm: save()",
        "password: <your password here>",
        "Set DB_PASSWORD=${DB_PASSWORD} in the compose file",
        "we booked an sk-ii trip to the spa",
        "Loved the SK-II facial",
        "my task-list is long",
        "boarding pass: 12A",
        "pwd: /home/alice",
        "She asked me for the password reset link",
        "https://user:password@example.com is the template in the docs",
        "git clone https://github.com/org/repo.git",
        "The meeting moved to Friday",
        "I went to a LGBTQ support group yesterday and it was so powerful.",
        "eyJ alone is not a token, nor is eyJhbGciOi",
        "my pin is in the drawer",
        "",
    ],
)
def test_ordinary_talk_is_allowed(cf: ContentFilter, text: str) -> None:
    assert cf.check(text) is None
    assert cf.is_allowed(text)


def test_extra_patterns_match_as_custom() -> None:
    cf = ContentFilter(extra_patterns=[r"\bACME-\d{6}\b", r"(?i)project\s+nightingale"])
    r = cf.check("badge number ACME-123456 please")
    assert r is not None and r.reason == "custom"
    assert "123456" not in r.message
    r2 = cf.check("about Project Nightingale ...")
    assert r2 is not None and r2.reason == "custom" and "#2" in r2.message
    assert cf.check("ACME-12 is fine") is None
    assert cf.extra_patterns == (r"\bACME-\d{6}\b", r"(?i)project\s+nightingale")


def test_defaults_win_over_custom_patterns() -> None:
    cf = ContentFilter(extra_patterns=[r"hunter"])
    r = cf.check("password: hunter2")
    assert r is not None and r.reason == "password_assignment"


@pytest.mark.parametrize("bad", ["(unclosed", "[a-", "*oops", "(?P<x>a)(?P<x>b)"])
def test_invalid_extra_pattern_raises_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError) as exc:
        ContentFilter(extra_patterns=["ok", bad])
    assert bad in str(exc.value)


def test_a_lone_string_is_one_pattern_not_characters() -> None:
    cf = ContentFilter(extra_patterns=r"secret-\d+")  # type: ignore[arg-type]
    assert cf.extra_patterns == (r"secret-\d+",)
    assert cf.check("x secret-42 y") is not None
    assert cf.check("s") is None


def test_empty_pattern_is_refused() -> None:
    with pytest.raises(ValueError):
        ContentFilter(extra_patterns=[""])


def test_filter_is_fast_on_large_adversarial_input(cf: ContentFilter) -> None:
    import time

    blobs = [
        "a" * 32000,
        "password" * 4000,
        "sk-" + "a-" * 16000,
        "eyJ" + "A" * 32000,
        "aws secret " * 3000,
        "my " * 10000 + "password",
        "x://" + "u" * 30000 + ":",
    ]
    start = time.perf_counter()
    for blob in blobs:
        cf.check(blob)
    assert time.perf_counter() - start < 2.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_check_never_raises(text: str) -> None:
    r = ContentFilter().check(text)
    assert r is None or r.reason in DEFAULT_REASONS
