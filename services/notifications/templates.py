"""Message templates, rendered with Jinja2: one set per template name.

Each template has a `subject` (email subject, push title), a `body` (the
plain-text email) and a `short` text (SMS, push body). They live here as
strings, so the package needs no data files. Undefined variables are an
error (StrictUndefined), so a template that names a field the event does
not have fails its unit test rather than a customer's message.

Filters: `money(amount, currency)` -> "EUR 1,234.50" through
shared.money.format_minor; `when(iso)` -> "2026-01-31 14:05 UTC".
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from jinja2 import DictLoader, Environment, StrictUndefined

from services.notifications import domain
from shared.money import format_minor, is_supported_currency

BRAND = "Fintech"
PARTS = ("subject", "body", "short")
SMS_MAX = 320  # two SMS segments

_FOOTER = """

--
{{ brand }}. You get this message because of your notification settings;
change them in the app (Settings > Notifications)."""

_SOURCES: dict[str, dict[str, str]] = {
    domain.Template.WELCOME: {
        "subject": "Welcome to {{ brand }}, {{ name }}",
        "body": """Hi {{ name }},

welcome to {{ brand }}! Your profile{% if email %} for {{ email }}{% endif %} is ready.
Open an account in the app to start receiving and sending money.""",
        "short": "Welcome to {{ brand }}, {{ name }}! Your profile is ready.",
    },
    domain.Template.NEW_LOGIN: {
        "subject": "New sign-in to your {{ brand }} account",
        "body": """Hi {{ name }},

your {{ brand }} account was signed in to{% if at %} on {{ at | when }}{% endif %}{% if mfa %}
with two-factor authentication{% endif %}.

If this was you, there is nothing to do. If it was not, change your password
now and turn on two-factor authentication.""",
        "short": (
            "New sign-in to your {{ brand }} account{% if at %} on {{ at | when }}{% endif %}."
            " Not you? Change your password now."
        ),
    },
    domain.Template.MFA_ENABLED: {
        "subject": "Two-factor authentication is on",
        "body": """Hi {{ name }},

two-factor authentication is now on for your {{ brand }} account{% if at %}
(since {{ at | when }}){% endif %}. Every sign-in will ask for a code from your
authenticator app.

If you did not turn it on, contact us right away.""",
        "short": "Two-factor authentication is now on for your {{ brand }} account.",
    },
    domain.Template.DEPOSIT_RECEIVED: {
        "subject": "Deposit received: {{ amount | money(currency) }}",
        "body": """Hi {{ name }},

your deposit of {{ amount | money(currency) }} has arrived in your account.{% if reference %}
Reference: {{ reference }}{% endif %}
Transfer: {{ transfer_id }}""",
        "short": "{{ brand }}: your deposit of {{ amount | money(currency) }} has arrived.",
    },
    domain.Template.TRANSFER_SENT: {
        "subject": "You sent {{ amount | money(currency) }}",
        "body": """Hi {{ name }},

you sent {{ amount | money(currency) }}.{% if reference %}
Reference: {{ reference }}{% endif %}
Transfer: {{ transfer_id }}""",
        "short": "{{ brand }}: you sent {{ amount | money(currency) }}.",
    },
    domain.Template.TRANSFER_RECEIVED: {
        "subject": "You received {{ amount | money(currency) }}",
        "body": """Hi {{ name }},

you received {{ amount | money(currency) }} in your account.{% if reference %}
Reference: {{ reference }}{% endif %}
Transfer: {{ transfer_id }}""",
        "short": "{{ brand }}: you received {{ amount | money(currency) }}.",
    },
    domain.Template.TRANSFER_FAILED: {
        "subject": "Your {{ kind_label }} of {{ amount | money(currency) }} did not go through",
        "body": """Hi {{ name }},

your {{ kind_label }} of {{ amount | money(currency) }} did not go through: {{ reason_text }}.
No money has left your account for it.{% if reference %}
Reference: {{ reference }}{% endif %}
Transfer: {{ transfer_id }}""",
        "short": (
            "{{ brand }}: your {{ kind_label }} of {{ amount | money(currency) }}"
            " did not go through: {{ reason_text }}."
        ),
    },
    domain.Template.PAYOUT_SENT: {
        "subject": "Payout sent: {{ amount | money(currency) }}",
        "body": """Hi {{ name }},

your payout of {{ amount | money(currency) }}
{%- if beneficiary_name %} to {{ beneficiary_name }}{% endif %}{% if iban_last4 %}
(IBAN ending {{ iban_last4 }}){% endif %} is on its way.{% if reference %}
Reference: {{ reference }}{% endif %}
Transfer: {{ transfer_id }}""",
        "short": (
            "{{ brand }}: your payout of {{ amount | money(currency) }}"
            "{% if beneficiary_name %} to {{ beneficiary_name }}{% endif %} is on its way."
        ),
    },
    domain.Template.RISK_REVIEW: {
        "subject": "We are reviewing your transfer",
        "body": """Hi {{ name }},

we are reviewing your transfer
{%- if amount is not none %} of {{ amount | money(currency) }}{% endif %}
before it goes out. This usually takes less than a business day; we will tell
you as soon as it is done. You do not need to do anything.
Transfer: {{ transfer_id }}""",
        "short": (
            "{{ brand }}: we are reviewing your transfer"
            "{% if amount is not none %} of {{ amount | money(currency) }}{% endif %}."
            " We will tell you when it is done."
        ),
    },
}


def _money(amount: int, currency: str) -> str:
    if not is_supported_currency(currency):
        return f"{currency} {amount} (minor units)"
    whole, _, fraction = format_minor(amount, currency).partition(".")
    grouped = f"{int(whole):,}"
    return f"{currency} {grouped}.{fraction}" if fraction else f"{currency} {grouped}"


def _when(value: str | None) -> str:
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _environment() -> Environment:
    sources = {}
    for name, parts in _SOURCES.items():
        for part, text in parts.items():
            sources[f"{name}/{part}"] = text + (_FOOTER if part == "body" else "")
    env = Environment(
        loader=DictLoader(sources),
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 (plain-text messages, never rendered as HTML)
        keep_trailing_newline=False,
        trim_blocks=False,
    )
    env.filters["money"] = _money
    env.filters["when"] = _when
    env.globals["brand"] = BRAND
    return env


_ENV = _environment()


# What each channel sends: (the part that is its subject or title, if any;
# the part that is its text).
CHANNEL_PARTS: dict[str, tuple[str | None, str]] = {
    domain.EMAIL: ("subject", "body"),
    domain.SMS: (None, "short"),
    domain.PUSH: ("subject", "short"),
}


@dataclass(frozen=True)
class Rendered:
    """A template's parts; those no channel asked for are None (not rendered)."""

    subject: str | None
    body: str | None
    short: str | None

    def for_channel(self, channel: str) -> tuple[str | None, str]:
        """(subject or title, text) as that channel sends them."""
        title, text = CHANNEL_PARTS[channel]
        sent = getattr(self, text)
        if channel == domain.SMS:
            sent = sent[:SMS_MAX]
        return (getattr(self, title) if title else None), sent


def render(template: str, context: Mapping, channels: Iterable[str] = domain.CHANNELS) -> Rendered:
    """The parts of a template that `channels` send (every part by default);
    `name` defaults to "there" ("Hi there")."""
    if template not in _SOURCES:
        raise KeyError(f"no template {template!r}")
    values = {"name": None, **context}
    values["name"] = values["name"] or "there"
    wanted = {part for channel in channels for part in CHANNEL_PARTS[channel] if part}
    parts = {
        part: _ENV.get_template(f"{template}/{part}").render(values).strip()
        if part in wanted
        else None
        for part in PARTS
    }
    # One line for subjects and short texts, whatever the values held.
    for part in ("subject", "short"):
        if parts[part] is not None:
            parts[part] = " ".join(parts[part].split())
    return Rendered(**parts)
