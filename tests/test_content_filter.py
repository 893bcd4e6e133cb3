"""The content filter (SPEC §6.3): secrets are rejected, ordinary talk is not.

Tables of secrets as people really paste or type them (provider formats, key/value
shapes in code, config and prose, eleven-plus languages), of look-alikes that must pass,
of whole events (content, name, metadata), the linear-time guarantee on the largest
turns, and zero rejections over the LoCoMo dev turns (real conversation, no secrets).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engram.pipeline.content_filter import DEFAULT_REASONS, ContentFilter, Rejection

# Secrets below are well-known documentation examples or random-looking strings
# assembled at run time, so no scanner mistakes this file for a leak.
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GHO = "gho_" + "8dKLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNn"
GH_PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
GH_PAT_FULL = "github_pat_" + "11AEXAMP0eWJKY40uvSwMF_" + "SQedUStPKR0CsTy4Qwb8DwkNhFdnXsiVpzz63FfkCzJr4i0B3JrTAwR4y9o"
GITLAB = "glpat-" + "Zk3mQ9xR7vT2pL5nW8yB"
OPENAI = "sk-" + "proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
OPENAI_PROJ_LONG = "sk-" + "proj-" + "Hbn88HxjSI6bWHtP3fS2qHx6kwXoIIXGvOoNZYW2mZp0zVZomHFw_UbbYrEqmSM9wCZ7Uw9xfogo-EmvnEN5N1aE"
OPENAI_LEGACY = "sk-" + "4f8Gh2Jk9Lm3Np7Qr1St6Vw0Xy5Za8Bc2De4Fg6Hi8Jk0Lm"
OPENAI_LETTERS = "sk-" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"
OPENAI_LETTERS_2 = "sk-" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUiOpAsDfGhJkLzXc"
OPENAI_SVC = "sk-" + "svcacct-" + "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL"
ANTHROPIC = "sk-" + "ant-api03-AbCdEf0123456789GhIjKlMnOpQrStUv-wx_yz"
SLACK = "xoxb-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_USER = "xoxp-" + "2048-4096-8192-6PwZPf1Qh6yYTWmE4lBYOvfZ8UzDzV8f"
SLACK_HOOK = "https://hooks.slack.com/services/" + "T0ABCDEF1/B0ABCDEF2/jfljoQoaF1LlqsajAIxNKu8i"
STRIPE = "sk_" + "live_4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_RK = "rk_" + "live_51H8xYzAbCdEfGhIjKlMnOpQr"
STRIPE_WH = "whsec_" + "S2G8NPRVdD53X83RZJzzzzgEOzdmenCk"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
GOOGLE_OAUTH = "GOCSPX-" + "jfljoQoaF1LlqsajAIxNKu8iXy9Z"
GOOGLE_ACCESS = "ya29." + "a0AfH6SMBx3k9Lm2nOp5qRs8tUv1wXy4zAbCdEf"
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"
HF_2 = "hf_" + "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL"
NPM = "npm_" + "8dKLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNn"
PYPI = "pypi-" + "AgEIcHlwaS5vcmcCJDU1NDA0ZTRmLWI0NDAtMDM0ZC02NjA4LTY5N2E4ZDQxYmVkNAACKlszLCJ"
SENDGRID = "SG." + "eWJKY40uvSwMFLZDe1f8rE" + "." + "FRIBXuDL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9Q"
TWILIO_SK = "SK" + "55404e4fb440034d6608697a8d41bed4"
TWILIO_AC = "AC" + "40e50454f31af3176813e02ea68ef786"
DISCORD = "MTA4NjE2NzQxMjM0NTY3ODkwMQ" + ".GxYzAb." + "KjIg8xNbe3nNyjOq9wMxEhh2FDEEtfjgVvVqE1Sk"
DISCORD_HOOK = "https://discord.com/api/webhooks/" + "108616741234567890/" + "SQedUStPKR0CsTy4Qwb8DwkNhFdnXsiVpzz63FfkCzJr4i0B3JrTAwR4y9o"
TELEGRAM = "123456789:" + "AAH" + "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oO"
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
JWT = (
    "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
BASIC = "YWxpY2U6" + "V29uZGVybGFuZDE="  # alice:Wonderland1
OPAQUE = "9fK2mQ7xL4pZ8vR3nT6wY1bH5cJ0dG2s"
PEM = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7x\n-----END RSA PRIVATE KEY-----"
OPENSSH = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
EC_PEM = "-----BEGIN EC " + "PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oOPTXVM\n-----END EC PRIVATE KEY-----"
PKCS8 = "-----BEGIN ENCRYPTED " + "PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n"
PGP = "-----BEGIN PGP " + "PRIVATE KEY BLOCK-----\n\nlQOYBF4xyzABCAC7\n"


@pytest.fixture(scope="module")
def cf() -> ContentFilter:
    return ContentFilter()


def assert_rejected_safely(rejection: Rejection | None, reason: str | None, secret: str) -> None:
    assert isinstance(rejection, Rejection), "a secret got through"
    if reason is not None:
        assert rejection.reason == reason
    assert rejection.reason in DEFAULT_REASONS
    for shown in (rejection.message, str(rejection), rejection.reason, rejection.where):
        assert secret not in shown, "the rejection echoes the secret"


# --------------------------------------------------------------------------------------
# Provider formats: rejected wherever they appear
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "secret"),
    [
        (f"here is my key:\n{PEM}", "private_key", "MIIEpAIBAAKCAQEA7x"),
        (f"deploy key\n{OPENSSH}\n", "private_key", "b3BlbnNzaC1rZXktdjEAAAAA"),
        (f"the cert's key:\n{EC_PEM}", "private_key", "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oOPTXVM"),
        (f"{PKCS8}...", "private_key", "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI"),
        (f"my gpg export:\n{PGP}", "private_key", "lQOYBF4xyzABCAC7"),
        (f"export AWS_ACCESS_KEY_ID={AWS_ID}", "aws_access_key", AWS_ID),
        (f"the key is ASIA{'Y' * 4}{'3' * 12} for the temp session", "aws_access_key", "ASIAYYYY"),
        (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_key", AWS_SECRET),
        (f'"SecretAccessKey": "{AWS_SECRET}"', "aws_secret_key", AWS_SECRET),
        (f"use token {GH} for the CI", "github_token", GH),
        (f"oauth token: {GHO}", "github_token", GHO),
        (f"GITHUB_TOKEN={GH_PAT}", "github_token", GH_PAT),
        (f"new fine-grained token {GH_PAT_FULL}", "github_token", GH_PAT_FULL),
        (f"gitlab: {GITLAB}", "gitlab_token", GITLAB),
        (f"my openai key {OPENAI} works", "openai_key", OPENAI),
        (f"OPENAI_API_KEY={OPENAI_LEGACY}", "openai_key", OPENAI_LEGACY),
        (f"try {OPENAI_PROJ_LONG}", "openai_key", OPENAI_PROJ_LONG),
        (f"the key is {OPENAI_LETTERS}", "openai_key", OPENAI_LETTERS),
        (f"{OPENAI_LETTERS_2} is the one from the dashboard", "openai_key", OPENAI_LETTERS_2),
        (f"service account key {OPENAI_SVC}", "openai_key", OPENAI_SVC),
        (f"claude key: {ANTHROPIC}", "anthropic_key", ANTHROPIC),
        (f"bot token {SLACK}", "slack_token", SLACK),
        (f"my user token is {SLACK_USER}", "slack_token", SLACK_USER),
        (f"post to {SLACK_HOOK}", "slack_token", SLACK_HOOK),
        (f"stripe: {STRIPE}", "stripe_key", STRIPE),
        (f"restricted key {STRIPE_RK}", "stripe_key", STRIPE_RK),
        (f"webhook signing secret {STRIPE_WH}", "stripe_key", STRIPE_WH),
        (f"maps key {GOOGLE}", "google_api_key", GOOGLE),
        (f"client secret {GOOGLE_OAUTH}", "google_api_key", GOOGLE_OAUTH),
        (f"access token {GOOGLE_ACCESS}", "google_api_key", GOOGLE_ACCESS),
        (f"HF token {HF}", "huggingface_token", HF),
        (f"huggingface-cli login --token {HF_2}", "huggingface_token", HF_2),
        (f"//registry.npmjs.org/:_authToken={NPM}", "npm_token", NPM),
        (f"twine upload -p {PYPI}", "pypi_token", PYPI),
        (f"sendgrid {SENDGRID}", "sendgrid_key", SENDGRID),
        (f"twilio api key {TWILIO_SK}", "twilio_key", TWILIO_SK),
        (f"account sid {TWILIO_AC}", "twilio_key", TWILIO_AC),
        (f"bot.run('{DISCORD}')", "discord_token", DISCORD),
        (f"hook: {DISCORD_HOOK}", "discord_token", DISCORD_HOOK),
        (f"telegram bot {TELEGRAM}", "telegram_bot_token", TELEGRAM),
        (
            f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net",
            "azure_storage_key",
            AZURE_KEY,
        ),
        (f"Authorization: Bearer {JWT}", "jwt", JWT),
        (f"callback https://app.example.com/cb#access_token={JWT}&state=1", "jwt", JWT),
        (f"Authorization: Basic {BASIC}", "auth_header", BASIC),
        (f"curl -H 'Authorization: Bearer {OPAQUE}' https://api.example.com", "auth_header", OPAQUE),
        ("connect to postgres://admin:Zx9!pq@db.internal:5432/app", "connection_string", "Zx9!pq"),
        ("mongodb+srv://app:averylongsecret@cluster0.example.net", "connection_string", "averylongsecret"),
        ("REDIS_URL=redis://:s3cretRedis@cache:6379/0", None, "s3cretRedis"),
        ("amqp://guest:Rabbit4ever@mq.local:5672/", "connection_string", "Rabbit4ever"),
        (f"here it is: {OPAQUE}", "high_entropy_token", OPAQUE),
    ],
)
def test_provider_secrets_are_rejected_without_echoing_them(
    cf: ContentFilter, text: str, reason: str | None, secret: str
) -> None:
    assert_rejected_safely(cf.check(text), reason, secret)


# --------------------------------------------------------------------------------------
# Key/value: code, config and prose
# --------------------------------------------------------------------------------------

CODE_AND_CONFIG = [
    ("password: hunter2", "hunter2"),
    ("DB_PASSWORD=s3cr3t!", "s3cr3t"),
    ('{"user": "bob", "password": "hunter2"}', "hunter2"),
    ("curl 'https://x.example/login?user=bob&pwd=letmein99'", "letmein99"),
    ("  password: Tr0ub4dor&3\n  host: db", "Tr0ub4dor"),
    ("dbPassword = 'correct horse battery staple'", "correct horse"),
    ("MYSQL_ROOT_PASSWORD=rootpass123", "rootpass123"),
    ("PGPASSWORD=hunter2 psql -h db -U app", "hunter2"),
    ('os.environ["PASSWORD"] = "hunter2"', "hunter2"),
    ("mysql -u root --password=Hunter2xyz", "Hunter2xyz"),
    ("docker login --password S3cure!reg registry.example.com", "S3cure"),
    ("Server=tcp:db.example.net;Database=app;User ID=admin;Password=Hunter2!xyz;", "Hunter2"),
    ("$password = 'p@ssw0rd';", "p@ssw0rd"),
    ("'password' => 'laravel123',", "laravel123"),
    ("api_key=abcd1234efgh5678", "abcd1234efgh5678"),
    ('"apiKey": "a1b2c3d4e5f6g7h8"', "a1b2c3d4e5f6g7h8"),
    ("client_secret: 8f2e9a71c3b54d6e", "8f2e9a71c3b54d6e"),
    ("SECRET_KEY = 'django-insecure-9x!k2@m#p4q'", "django-insecure"),
    ("token = 'a8f5f167f44f4964e6c998dee827110c'", "a8f5f167f44f4964e6c998dee827110c"),
    ("export AUTH_TOKEN=tok_9Xk2LmQ8vR", "tok_9Xk2LmQ8vR"),
    ("access_token=Zm9vYmFyYmF6cXV4MTIz", "Zm9vYmFyYmF6cXV4MTIz"),
    ('"Authorization": "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"', "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"),
    ("encryption_key: 0J8hT2kLmN4pQ6rS", "0J8hT2kLmN4pQ6rS"),
    ('{"pin": "4821"}', "4821"),
]


@pytest.mark.parametrize(("text", "secret"), CODE_AND_CONFIG)
def test_key_value_secrets_in_code_and_config(cf: ContentFilter, text: str, secret: str) -> None:
    r = cf.check(text)
    assert_rejected_safely(r, None, secret)
    assert r is not None and r.reason in ("password_assignment", "secret_assignment", "connection_string")


TALK = [
    # the campaign's findings
    "my pw is hunter2",
    "My password's hunter2.",
    "My login is bob and the pass is hunter2.",
    "My passphrase is correct horse battery staple.",
    "Mein Passwort ist hunter2.",
    # English, as people type it
    "password: hunter2",
    "Password: swordfish",
    "my password is hunter2",
    "my password is swordfish",
    "his password was Fluffy",
    "My gmail password is 'correct horse battery'",
    "the wifi password for the cabin is Tr0ub4dor&3",
    "The WiFi password is sunflower22 btw",
    "our wifi pw: Summer2024!",
    "my pwd is letmein1",
    "the password is now hunter2",
    "password is still hunter2 lol",
    "the password is: Pa55word!",
    "Password is set to Zxcv!2345",
    "my bank pin is 4821",
    "My PIN is 0394",
    "the pin for my debit card is 7731",
    "the door code is 4821#",
    "gate code: 1397",
    "I changed my password to Tr0ub4dor&3",
    "I set the wifi password to bluebird77",
    "hunter2 is my password",
    "'swordfish' is the password",
    "use swordfish as the password",
    "use 'letmein' as the password",
    "the passphrase is 'purple monkey dishwasher'",
    "passphrase: tangerine elephant bicycle moon",
    "My passphrase is purple monkey dishwasher",
    "my password is correct horse battery staple",
    "my seed phrase is abandon ability able about above absent",
    "credentials are bob/hunter2",
    "creds: admin / S3cure!pass",
    "login: bob pass: hunter2",
    "user bob pass hunter2",
    "username: alice password: Wonderland1",
    "The API key is abc123def456ghi",
    "my token is 9f8e7d6c5b4a3f2e",
    "the client secret is Xk29-pLm8-QwZ4",
    "password hunter2",
    "Is the password hunter2?",
    "remember my password for the portal: Bl00mberg!",
    "netflix login is sarah@example.com and the password is Chicken99",
    "note to self - bank pw = Maple2020",
    "ok here: user=admin pw=Adm1n!2024",
    "ssh password: raspberry",
    "db pass: pgAdmin#77",
    "i use the same password everywhere: dolphin88",
    "Here's the username and password: admin / hunter2",
    "The wifi's password is \"PurpleRain\"",
    "my phone passcode is 080808",
    "pin 2580 for the phone",
    "my passphrase is \"the quick brown fox\"",
    "wallet seed: apple banana cherry dog elephant frog grape house igloo jelly kite lemon",
    "Mon mot de passe, c'est Bonjour2023",
    # German
    "Das Kennwort lautet Sommer2024!",
    "Das WLAN-Passwort ist Sonnenblume42",
    "Passwort: geheim123",
    "Meine PIN ist 4711",
    # French
    "Le mot de passe : hunter2",
    "mon mot de passe est soleil123",
    "le mot de passe du wifi est Chaton2020",
    "mdp: azerty123",
    # Spanish
    "mi contraseña es hunter2",
    "Contraseña: Gatito2021",
    "la clave del wifi es 12345678",
    # Portuguese
    "minha senha é hunter2",
    "a senha do wifi é casa1234",
    # Italian
    "la mia password è hunter2",
    "la parola d'ordine è pizza123",
    # Dutch
    "mijn wachtwoord is hunter2",
    "het wachtwoord is fiets2020",
    # Swedish, Norwegian, Danish
    "mitt lösenord är hunter2",
    "lösenordet är kaffe99",
    "passordet mitt er hunter2",
    "min adgangskode er Hygge123",
    # Polish
    "moje hasło to hunter2",
    "hasło: Zaq12wsx",
    # Finnish
    "salasanani on Kissa123",
    # Russian
    "мой пароль qwerty123",
    "пароль: qwerty123",
    "пароль от почты — vasya1985",
    # Turkish
    "şifrem 1234",
    "şifre: hunter2",
    "parolam Istanbul34",
    # Japanese, Chinese, Korean
    "パスワードは hunter2 です",
    "パスワード：Tokyo1234",
    "我的密码是hunter2",
    "密码：123456",
    "wifi密码是12345678",
    "비밀번호는 hunter2입니다",
    "비밀번호: qwer1234",
    # Thai, Hindi, Arabic, Hebrew, Indonesian, Vietnamese
    "รหัสผ่านของฉันคือ bangkok99",
    "मेरा पासवर्ड abc12345 है",
    "كلمة المرور: Cairo2020",
    "סיסמה: Tel4viv",
    "kata sandi saya adalah Jakarta45",
    "mật khẩu là hanoi123",
]


@pytest.mark.parametrize("text", TALK)
def test_passwords_in_talk_are_rejected(cf: ContentFilter, text: str) -> None:
    r = cf.check(text)
    assert isinstance(r, Rejection), "a password in talk got through"
    assert r.reason in ("password_assignment", "secret_assignment")
    for word in ("hunter2", "swordfish", "4821", "Tr0ub4dor", "horse", "qwerty123", "1234"):
        if word in text:
            assert word not in str(r)


@pytest.mark.parametrize(
    "text",
    [
        "pass\u200bword: hunter2",  # a zero-width space inside the keyword
        "ｐａｓｓｗｏｒｄ：hunter2",  # full-width letters and colon
        "my pass\u00adword is hunter2",  # a soft hyphen
    ],
)
def test_invisible_and_full_width_tricks_do_not_hide_a_password(cf: ContentFilter, text: str) -> None:
    assert cf.check(text) is not None


# --------------------------------------------------------------------------------------
# Look-alikes that must pass
# --------------------------------------------------------------------------------------

BENIGN = [
    # the brief's protections
    "I forgot my password",
    "I forgot my password again, so annoying",
    "the password policy requires 8 characters",
    "the password policy requires 8 chars",
    "Passwords must be at least 12 characters long.",
    "my password is too short",
    "my password is too weak, I need a new one",
    "my password is 16 characters long",
    "my password is expired",
    "password reset link",
    "She asked me for the password reset link",
    "I passed the exam",
    "a boarding pass: 12A",
    "boarding pass: 12A",
    "pass the salt",
    "Can you pass the salt please?",
    "sk-ii skincare is my favourite",
    "we booked an sk-ii trip to the spa",
    "Loved the SK-II facial",
    "password = getpass()",
    "password = getpass.getpass()",
    'pw = os.environ["PW"]',
    'password = os.environ["DB_PASSWORD"]',
    "password: <your password>",
    "password: <your password here>",
    "Password: ********",
    # more talk about passwords
    "The password: keep it somewhere safe and never share it",
    "What's the wifi password?",
    "what is the password?",
    "Can you remind me of the password?",
    "The password is on the fridge",
    "my password is on a sticky note",
    "My password is my dog's name",
    "my password is Bob's birthday",
    "my password is the same as my email",
    "the password is correct",
    "my password is case sensitive",
    "The password is required",
    "my password is different for every site",
    "your password is visible in plain text",
    "my password is stored in 1Password",
    "the password was changed yesterday",
    "the password is whatever you want",
    "Password: (hidden)",
    "Password: [REDACTED]",
    "Password: same as before",
    "Password: see attached",
    "Password: sent separately",
    "Password: ask Bob",
    "password: changeme",
    "my password manager is Bitwarden",
    "use a password manager, seriously",
    "change your password every 90 days",
    "I changed my password to something stronger",
    "use something memorable as the password",
    "use your birthday as the pin",
    "the new password needs a number and a symbol",
    "my pin is in the drawer",
    "I'll pin this for later",
    "the pin on the map is wrong",
    "the enamel pin is 2 inches wide",
    "Mein Passwort ist zu kurz",
    "Ich habe mein Passwort vergessen",
    "J'ai oublié mon mot de passe",
    "mon mot de passe est trop court",
    "olvidé mi contraseña",
    "mi contraseña es demasiado corta",
    "la clave es la paciencia",
    "La clave del éxito es la constancia",
    "esqueci minha senha",
    "minha senha é muito fraca",
    "ho dimenticato la password",
    "la password è troppo corta",
    "ik ben mijn wachtwoord vergeten",
    "mijn wachtwoord is te kort",
    "jag har glömt mitt lösenord",
    "hasło jest za krótkie",
    "я забыл пароль",
    "пароль слишком простой",
    "şifremi unuttum",
    "şifre çok kısa",
    "パスワードを忘れました",
    "我忘了密码",
    "密码错误",
    "비밀번호를 잊어버렸어요",
    "ลืมรหัสผ่าน",
    "मैं अपना पासवर्ड भूल गया",
    "hasło jest nieprawidłowe",
    "das Passwort ist geheim",
    # pass / secret / token / key / auth in ordinary talk
    "I passed my driving test!",
    "passing the ball to Sam",
    "we crossed the Khyber Pass",
    "the mountain pass is closed for winter",
    "the pass was stunning at sunrise",
    "season pass holders get in free",
    "my passport photo is awful",
    "the pass rate was 85%",
    "the secret is patience",
    "The secret to good bread is time",
    "keep it a secret",
    "secret santa is on Friday",
    "the key is to keep practicing",
    "key: value pairs are easy",
    "a token of appreciation",
    "tokens are how the model counts text",
    "max_tokens: 4096",
    "auth is handled by Okta",
    "credentials: ask IT",
    "the bearer of bad news",
    "Basic authentication is deprecated",
    "basic stuff really",
    "my task-list is long",
    "pwd: /home/alice",
    "The meeting moved to Friday",
    "I went to a LGBTQ support group yesterday and it was so powerful.",
    # code that handles secrets without containing one
    "password = getpass.getpass()",
    'password = input("Password: ")',
    "if password == confirm: save()",
    "def login(user: str, password: str) -> bool:",
    "password: str = Field(...)",
    'password = request.form["password"]',
    "const password = process.env.PASSWORD;",
    "user.password = hashed",
    "password=password",
    '"password": ""',
    "password: null",
    "api_key = settings.OPENAI_API_KEY",
    "token = tokenizer(text)",
    'token = os.getenv("GITHUB_TOKEN")',
    'api_key: str = ""',
    'headers = {"Authorization": f"Bearer {token}"}',
    '-H "Authorization: Bearer $TOKEN"',
    "Authorization: Bearer <token>",
    "Authorization: Bearer YOUR_ACCESS_TOKEN",
    "Authorization: Basic base64(user:pass)",
    "Set DB_PASSWORD=${DB_PASSWORD} in the compose file",
    '"password": "${DB_PASSWORD}"',
    "password: ${{ secrets.DB_PASSWORD }}",
    "export PGPASSWORD=$DB_PASS",
    "mysql -u root -p",
    "docker login -u me --password-stdin",
    "PASSWORD_MIN_LENGTH = 12",
    "password_policy: strict",
    '"password_required": true',
    "AUTH_TYPE=oauth2",
    "api_key=YOUR_API_KEY",
    "OPENAI_API_KEY=sk-...",
    "OPENAI_API_KEY=sk-your-key-here",
    "GITHUB_TOKEN=ghp_" + "x" * 36,
    "AWS_ACCESS_KEY_ID=AKIA" + "X" * 16,
    "postgres://user:password@localhost/db",
    "postgres://user:<password>@db:5432/app",
    "https://user:${PASS}@example.com",
    "https://user:password@example.com is the template in the docs",
    "git clone https://github.com/org/repo.git",
    # logs and tool output
    'ERROR: password authentication failed for user "postgres"',
    "Permission denied (publickey,password).",
    "[sudo] password for alice:",
    "Enter password:",
    "Password:",
    "Login failed: invalid password",
    "401 Unauthorized: invalid API key",
    "Error: token expired at 2024-03-01T10:00:00Z",
    "INFO token refresh succeeded in 120ms",
    "WARN secret rotation scheduled for 2024-04-01",
    "X-Request-Id: 4b9f2c1e-8a7d-4e6f-9b0a-1c2d3e4f5a6b",
    'ETag: "33a64df551425fcc55e4d42a148795d9f25f89d4"',
    "docker pull python@sha256:4f53e4f8b3b7a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7",
    "Password strength: strong",
    "Password last changed: 3 months ago",
    "Password manager: 1Password",
    "The password for Sarah's account? No idea",
    "the PIN pad is broken",
    "PIN: I'll text it to you",
    "token: will send separately",
    "password: I'll tell you in person",
    'assert httpx.get(url, headers={"x-api-key": key}).status_code == 200',
    "list(client.memories.list(user_id=user, page_size=1))",
    "if not password: raise ValueError('password required')",
    "PASSWORD: ${DB_PASSWORD:?required}",
    '_PW = "a password in clear"',
    r'r"(?P<kw>password|passphrase|passcode|pin|pw)"',
    # ids, hashes, links
    "commit 4f8a9c1e2b3d4a5f6e7d8c9b0a1f2e3d4c5b6a7f fixed it",
    "the sha256 is 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "id 123e4567-e89b-12d3-a456-426614174000",
    "request id: AbC123dEf456GhI789jKl012MnO345pQr",
    "see https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://drive.google.com/file/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/view",
    "https://cdn.example.com/img/photo.jpg?token=" + JWT,
    "eyJ alone is not a token, nor is eyJhbGciOi",
    "AbstractSingletonProxyFactoryBeanConfiguration",
    "",
]


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_talk_and_code_are_allowed(cf: ContentFilter, text: str) -> None:
    assert cf.check(text) is None
    assert cf.is_allowed(text)


# --------------------------------------------------------------------------------------
# Whole events: content, name and every string of metadata
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "secret"),
    [
        ({"api_key": OPENAI}, OPENAI),
        ({"password": "hunter2"}, "hunter2"),
        ({"OPENAI_API_KEY": OPENAI_LEGACY}, OPENAI_LEGACY),
        ({"db": {"user": "app", "pass": "letmein"}}, "letmein"),
        ({"auth": {"token": "abc123def456"}}, "abc123def456"),
        ({"headers": {"Authorization": f"Bearer {OPAQUE}"}}, OPAQUE),
        ({"creds": ["bob", "hunter2xyz"]}, "hunter2xyz"),
        ({"notes": ["see", {"deep": "my password is hunter2"}]}, "hunter2"),
        ({"client_secret": "Xk29pLm8QwZ4"}, "Xk29pLm8QwZ4"),
        ({"passphrase": "correct horse battery staple"}, "correct horse"),
        ({"wifi": {"ssid": "cabin", "password": "bluebird"}}, "bluebird"),
        ({"pin": 4821}, "4821"),
        ({GH: True}, GH),  # a secret as a key
        ({"env": "AWS_SECRET_ACCESS_KEY=" + AWS_SECRET}, AWS_SECRET),
        ({"raw": json.dumps({"password": "hunter2"})}, "hunter2"),
    ],
)
def test_secrets_in_metadata_are_rejected(cf: ContentFilter, metadata: dict[str, Any], secret: str) -> None:
    r = cf.check_event("Let's meet on Friday.", name="Caroline", metadata=metadata)
    assert_rejected_safely(r, None, secret)
    assert r is not None and r.where == "metadata" and r.message.startswith("metadata ")


def test_a_metadata_rejection_names_no_key(cf: ContentFilter) -> None:
    """A key can be telling too (``acme_prod_db_password``): the message names neither."""
    r = cf.check_event("hi", name=None, metadata={"acme_prod_db_password": "hunter2"})
    assert r is not None and "acme" not in r.message and "hunter2" not in r.message


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"password": ""},
        {"password": "********"},
        {"password": None},
        {"password": "<set me>"},
        {"password": "$DB_PASSWORD"},
        {"password_policy": "strict"},
        {"password_min_length": 12},
        {"token_count": 123},
        {"max_tokens": 4096},
        {"tokens": 17},
        {"token": "3f9a2b1c"},  # a short correlation marker, as a test run writes one
        {"next_page_token": "CAEQAA"},
        {"source": "slack", "channel": "general", "thread_ts": "1700000000.000100"},
        {"img_url": ["https://i.redd.it/l7hozpetnhlb1.jpg"], "query": "painting sunrise", "dia_id": "D1:3"},
        {"secret": False},
        {"is_secret": True},
        {"pin": "top"},
        {"pinned": True},
        {"key": "value"},
        {"primary_key": "id"},
        {"request_id": "req_8f7G6h5J4k3L2m1N0p9Q8r7S6t5U4v3W"},
        {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
        {"session_token": None},
        {"auth": "none"},
        {"auth": "oauth2"},
        {"api_key": "<set me>"},
        {"tags": ["pass", "secret", "token"]},
        {"nested": {"deeper": [{"deepest": "I forgot my password"}]}},
    ],
)
def test_ordinary_metadata_is_allowed(cf: ContentFilter, metadata: dict[str, Any]) -> None:
    assert cf.check_event("Let's meet on Friday.", name="Melanie", metadata=metadata) is None


def test_check_event_looks_at_content_then_name() -> None:
    cf = ContentFilter()
    r = cf.check_event(f"my key is {GH}", name="Caroline", metadata={})
    assert r is not None and r.where == "content" and r.message.startswith("content ")
    r = cf.check_event("hello", name=OPENAI, metadata={})
    assert_rejected_safely(r, "openai_key", OPENAI)
    assert r is not None and r.where == "name"
    assert cf.check_event("hello", name=None, metadata=None) is None
    assert cf.check_event("", name="", metadata={}) is None


def test_deeply_nested_metadata_does_not_overflow() -> None:
    deep: Any = {"password": "hunter2"}
    for _ in range(5000):
        deep = {"x": [deep]}
    r = ContentFilter().check_event("hi", name=None, metadata=deep)
    assert r is not None and r.where == "metadata"


def test_operator_patterns_apply_to_name_and_metadata() -> None:
    cf = ContentFilter(extra_patterns=[r"\bACME-\d{6}\b"])
    r = cf.check_event("hi", name=None, metadata={"badge": "ACME-123456"})
    assert r is not None and r.reason == "custom" and r.where == "metadata" and "123456" not in r.message
    r = cf.check_event("hi", name="ACME-654321", metadata={})
    assert r is not None and r.reason == "custom" and r.where == "name"


# --------------------------------------------------------------------------------------
# Operator patterns
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Linear time, robustness
# --------------------------------------------------------------------------------------

ADVERSARIAL = [
    "a" * 32000,
    "password" * 4000,
    "password " * 3555,
    "password: " * 3200,
    "password is " * 2900,
    "my password is " * 2100,
    "the pass is " * 2600,
    "my pin is " * 3200,
    "password for the " * 1880,
    "password " + " " * 31000 + "x",
    "user " + " " * 31000 + "pass",
    "a=" * 16000,
    "=" * 32000,
    ":" * 32000,
    "api_key=" * 4000,
    "password='" * 3200,
    "sk-" + "a-" * 16000,
    "eyJ" + "A" * 32000,
    "eyJ" + "a." * 16000,
    "aws secret " * 3000,
    "my " * 10000 + "password",
    "x://" + "u" * 30000 + ":",
    "x://" + ":" * 30000 + "@",
    "Basic " + "A" * 31990,
    "Bearer " + "a1" * 16000,
    "-----BEGIN " * 2900,
    "--" * 16000,
    "--password " * 2900,
    " is my password" * 2100,
    "use " * 8000 + "as the password",
    "密码是" * 10000,
    "A" * 32000,
    "MTA4" * 8000,
    "\u200b" * 32000,
    "ｐ" * 32000,
]


def _base64_run(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    state, out = 12345, []
    for _ in range(n):
        state = (state * 1103515245 + 12345) % 2**31
        out.append(alphabet[state % 64])
    return "".join(out)


def test_filter_is_linear_on_large_adversarial_input(cf: ContentFilter) -> None:
    """Catastrophic backtracking would take minutes; the bound only says "finishes"."""
    blobs = [*ADVERSARIAL, _base64_run(32000), (_base64_run(40) + " ") * 780]
    start = time.perf_counter()
    for blob in blobs:
        cf.check(blob)
        cf.check_event("hi", name=blob[:2000], metadata={"k": blob, blob[:100]: [blob[:1000]]})
    assert time.perf_counter() - start < 20.0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_check_never_raises(text: str) -> None:
    r = ContentFilter().check(text)
    assert r is None or r.reason in DEFAULT_REASONS


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=30)), st.dictionaries(st.text(max_size=12), _json))
def test_check_event_never_raises(content: str, name: str | None, metadata: dict[str, Any]) -> None:
    r = ContentFilter().check_event(content, name=name, metadata=metadata)
    assert r is None or (r.reason in DEFAULT_REASONS and r.where in ("content", "name", "metadata"))


# --------------------------------------------------------------------------------------
# Real conversation: the LoCoMo dev turns carry no secrets
# --------------------------------------------------------------------------------------

LOCOMO_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo_dev.json"


def test_no_rejection_on_the_locomo_dev_turns() -> None:
    """Every turn as engram receives it (content with ` [shares: …]`, the speaker as
    ``name``, the other fields of the turn as metadata) must pass."""
    if not LOCOMO_DEV.exists():
        pytest.skip(f"LoCoMo dev set not found at {LOCOMO_DEV} (it lives in ../shared/data, beside the repo)")
    cf = ContentFilter()
    turns = rejected = 0
    samples = []
    for conversation in json.loads(LOCOMO_DEV.read_text()):
        conv = conversation["conversation"]
        for key, session in conv.items():
            if not key.startswith("session_") or not isinstance(session, list):
                continue
            for turn in session:
                turns += 1
                content = turn["text"] + (f" [shares: {turn['blip_caption']}]" if turn.get("blip_caption") else "")
                metadata = {k: v for k, v in turn.items() if k not in ("text", "speaker")}
                r = cf.check_event(content, name=turn["speaker"], metadata=metadata)
                if r is not None:
                    rejected += 1
                    samples.append(f"{turn['dia_id']}: {r}")
    assert turns > 2000
    assert rejected == 0, samples[:10]
