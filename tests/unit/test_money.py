"""Money per currency: accepted currencies, points per whole unit, and their configuration."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from payment_outbox.domain.money import (
    DEFAULT_MONEY_RULES,
    MoneyRules,
    parse_currencies,
    parse_points_per_unit,
)
from payment_outbox.errors import CurrencyNotAccepted
from payment_outbox.settings import MoneySettings

pytestmark = pytest.mark.unit

RULES = MoneyRules.of(["CNY", "USD", "JPY"], {"CNY": 1, "USD": 7, "JPY": 0})


@pytest.mark.parametrize(
    ("amount", "currency", "points"),
    [
        ("128.99", "CNY", 128),
        ("0.50", "CNY", 0),
        ("1.00", "CNY", 1),
        ("9999999999.99", "CNY", 9999999999),
        ("128.99", "USD", 896),
        ("0.99", "USD", 0),
        ("1.00", "USD", 7),
        ("12899", "JPY", 0),
    ],
)
def test_points_are_whole_units_times_the_currencys_rate(amount: str, currency: str, points: int) -> None:
    # Given an amount in a currency / When its points are computed
    result = RULES.points_for(Decimal(amount), currency)
    # Then the fraction is dropped and the whole units earn the currency's rate
    assert result == points
    assert type(result) is int


@pytest.mark.parametrize(("amount", "points"), [("128.99", 128), ("0.01", 0), ("100", 100)])
def test_by_default_one_point_per_whole_yuan(amount: str, points: int) -> None:
    assert DEFAULT_MONEY_RULES.points_for(Decimal(amount), "CNY") == points


@pytest.mark.parametrize("currency", ["EUR", "JPY", "cny"])
def test_a_currency_the_deployment_does_not_accept_earns_nothing_and_is_refused(currency: str) -> None:
    # Given the default rules (CNY only) / When another currency is checked or earns points
    with pytest.raises(CurrencyNotAccepted) as refused:
        DEFAULT_MONEY_RULES.require_accepted(currency)
    assert refused.value.code == "currency_not_accepted"
    assert refused.value.details == [{"field": "currency", "problem": refused.value.message}]
    with pytest.raises(CurrencyNotAccepted):
        DEFAULT_MONEY_RULES.points_for(Decimal("10.00"), currency)


@pytest.mark.parametrize(
    ("accepted", "rates", "problem"),
    [
        ([], {}, "at least one currency"),
        (["CNY", "USD"], {"CNY": 1}, "no points rule for accepted currencies: USD"),
        (["CNY"], {"CNY": -1}, "0 to 10000"),
        (["CNY"], {"CNY": 10_001}, "0 to 10000"),
        (["cny"], {"cny": 1}, "ISO 4217"),
    ],
)
def test_inconsistent_rules_are_refused(accepted: list[str], rates: dict[str, int], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        MoneyRules.of(accepted, rates)


def test_the_lists_parse_as_configured() -> None:
    assert parse_currencies(" CNY, USD ,") == frozenset({"CNY", "USD"})
    assert parse_points_per_unit("CNY:1, USD:7") == {"CNY": 1, "USD": 7}


@pytest.mark.parametrize(
    "text", ["CNY", "CNY:", "CNY:x", "CNY:-1", "CN:1", "CNY:1,CNY:2", "CNY=1", "CNY:999999"]
)
def test_a_points_list_that_is_not_cur_points_pairs_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_points_per_unit(text)


# --- settings: refused at start --------------------------------------------------------------------


def test_the_settings_give_the_configured_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCEPTED_CURRENCIES", "CNY,USD")
    monkeypatch.setenv("POINTS_PER_UNIT", "CNY:1,USD:7")
    rules = MoneySettings().rules()
    assert rules.accepted == frozenset({"CNY", "USD"})
    assert rules.points_for(Decimal("2.50"), "USD") == 14


def test_the_settings_default_to_cny_at_one_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCEPTED_CURRENCIES", raising=False)
    monkeypatch.delenv("POINTS_PER_UNIT", raising=False)
    assert MoneySettings().rules() == DEFAULT_MONEY_RULES


@pytest.mark.parametrize(
    ("accepted", "rates", "problem"),
    [
        ("CNY,USD", "CNY:1", "no points rule for accepted currencies: USD"),
        ("CNY,usd", "CNY:1", "ISO 4217"),
        ("", "CNY:1", "at least one currency"),
        ("CNY", "CNY=1", "CUR:points"),
    ],
)
def test_settings_that_break_a_rule_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, accepted: str, rates: str, problem: str
) -> None:
    monkeypatch.setenv("ACCEPTED_CURRENCIES", accepted)
    monkeypatch.setenv("POINTS_PER_UNIT", rates)
    with pytest.raises(ValidationError, match=problem):
        MoneySettings()
