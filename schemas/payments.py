"""Payment outcomes on `billing-payments`: CloudEvents 1.0 structured JSON, key = team.

The payment processor (seed 000 names Stripe) reports each attempt to charge an invoice:

```json
{"specversion": "1.0", "id": "pay-41", "source": "stripe", "type": "payment_failed",
 "time": "2026-08-04T00:05:00Z", "subject": "team-acme",
 "data": {"invoice": {"invoice_date": "2026-08-04", "reference": ""}, "attempt": 1,
          "amount": "66.00", "currency": "USD", "failure": "card_declined"}}
```

`subject` is the team; `(source, id)` identifies the outcome, so a redelivery changes
nothing. `payment_succeeded` and `payment_failed` name the invoice (its key is the team,
`invoice_date` and `reference`, "" on a billing date's invoice), the attempt (1 for the
first charge, then each retry) and the amount and currency charged, which must be the
invoice's total and currency. `payment_method_updated` names no invoice: the customer gave a
new card, which the dunning schedule takes as a reason to retry at once.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.currency import CURRENCY_EXPONENTS
from schemas.events import rfc3339_text
from schemas.limits import date_problem, stored_time

__all__ = ["PAYMENT_TYPES", "InvoiceRef", "PaymentData", "PaymentEvent", "PaymentType",
           "money_text"]

PaymentType = Literal["payment_succeeded", "payment_failed", "payment_method_updated"]
PAYMENT_TYPES: tuple[PaymentType, ...] = (
    "payment_succeeded", "payment_failed", "payment_method_updated",
)
_AMOUNT_CHARS = 32


def money_text(value: str, *, positive: bool) -> str:
    """`value` if it is a decimal amount of money (> 0 when `positive`, else >= 0) written
    without surrounding spaces; else a ValueError saying so."""
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a decimal number") from exc
    if (not amount.is_finite() or amount < 0 or (positive and amount == 0)
            or value.strip() != value):
        raise ValueError(f"{value!r} is not an amount of money {'>' if positive else '>='} 0")
    return value


class InvoiceRef(BaseModel):
    """Which of the team's invoices: its date and reference ("" on a billing date)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    invoice_date: date
    reference: str = Field(default="", max_length=600)

    @field_validator("invoice_date")
    @classmethod
    def _stored_date(cls, value: date) -> date:
        problem = date_problem(value, "invoice_date")
        if problem:
            raise ValueError(problem)
        return value


class PaymentData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    invoice: InvoiceRef | None = None
    """The invoice charged; payment_method_updated names none."""
    attempt: int | None = Field(default=None, ge=1, le=1000)
    """1 for the first charge of the invoice, then one more for each retry."""
    amount: str | None = Field(default=None, min_length=1, max_length=_AMOUNT_CHARS)
    """The amount charged, a decimal string in the currency's minor units ("66.00")."""
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    failure: str | None = Field(default=None, min_length=1, max_length=256)
    """payment_failed only: the processor's reason (card_declined, expired_card, ...)."""

    @field_validator("amount")
    @classmethod
    def _decimal(cls, value: str | None) -> str | None:
        return None if value is None else money_text(value, positive=False)

    @field_validator("currency")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in CURRENCY_EXPONENTS:
            raise ValueError(f"currency: unknown ISO 4217 code {value!r}")
        return value


class PaymentEvent(BaseModel):
    """One payment outcome as the processor's adapter sends it; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=256)
    type: PaymentType
    time: AwareDatetime
    """When the attempt was made (or the method updated)."""
    subject: str = Field(min_length=1, max_length=256)
    """The team, which is also the message key."""
    data: PaymentData = PaymentData()

    _rfc3339_time = field_validator("time", mode="before")(rfc3339_text)

    _stored_time = field_validator("time")(stored_time)

    @model_validator(mode="after")
    def _fields_of_type(self) -> PaymentEvent:
        data = self.data
        if self.type == "payment_method_updated":
            if data.invoice is not None or data.amount is not None or data.attempt is not None:
                raise ValueError("data: payment_method_updated names no invoice, attempt or "
                                 "amount")
            return self
        for name in ("invoice", "attempt", "amount", "currency"):
            if getattr(data, name) is None:
                raise ValueError(f"data.{name}: {self.type} needs it")
        if self.type == "payment_succeeded" and data.failure is not None:
            raise ValueError("data.failure: only payment_failed gives a failure reason")
        return self

    @property
    def team(self) -> str:
        return self.subject

    @property
    def reference(self) -> str:
        """How the store and notices name the outcome: "source/id"."""
        return f"{self.source}/{self.id}"

    @property
    def money(self) -> Decimal:
        """The amount as a Decimal (0 for payment_method_updated)."""
        return Decimal(self.data.amount or "0")
