"""What the billing rules refuse, as one tree under BillingRuleError.

    ValueError
    ├── BillingRuleError      a billing rule refuses what was asked
    │   ├── ChangeError       the schedule refuses a billing change, naming it and the rule
    │   ├── DowngradeRefused  usage exceeds the lower tier ("users: 10 > 3")
    │   ├── OwnerOnly         only the subscription owner may upgrade or resume
    │   ├── NotApplicable     the plan, or the state it is in, does not take the change
    │   ├── DateRefused       before the account, outside the term, or a day already changed
    │   └── CountRefused      a count the holding cannot take (seats below members, ...)
    └── CloseError            the close cannot run as asked: not a rule

The schedule turns a BillingRuleError raised while a change applies into a ChangeError,
the refusal the customer sees; any other exception is a programming error and propagates.
A plain ValueError from a rule function is a caller's mistake (a term that is not a billing
date, an invoice date that is not a billing date), never a refusal. BillingRuleError is a
ValueError because every refusal is a value the rules do not take.
"""

from __future__ import annotations

__all__ = [
    "BillingRuleError",
    "ChangeError",
    "CloseError",
    "CountRefused",
    "DateRefused",
    "DowngradeRefused",
    "NotApplicable",
    "OwnerOnly",
]


class BillingRuleError(ValueError):
    """A billing rule refuses what was asked; the message is one line saying why."""


class ChangeError(BillingRuleError):
    """A billing change that cannot apply to its account; one line naming both."""


class DowngradeRefused(BillingRuleError):
    """Usage exceeds the lower tier; `over` lists each excess as "resource: used > limit"."""

    def __init__(self, plan: str, over: tuple[str, ...]) -> None:
        self.over = over
        super().__init__(f"cannot downgrade to {plan}: {'; '.join(over)}; reduce usage first")


class OwnerOnly(BillingRuleError):
    """A change only the subscription owner may make."""


class NotApplicable(BillingRuleError):
    """A change the plan kind, the plan or the subscription's state does not take."""


class DateRefused(BillingRuleError):
    """A change dated before the account, outside the term it must fall in, or on or before
    the day of the last change (proration is by whole days)."""


class CountRefused(BillingRuleError):
    """A count the holding cannot take: fewer seats than members, more units than held."""


class CloseError(ValueError):
    """The close cannot run as asked (an unknown team, a billing history that cannot apply).

    Not a BillingRuleError: a refused history reaches the close as its ChangeError, and the
    close reports it as this error to whoever runs it."""
