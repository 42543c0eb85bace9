"""lab_price_cache: a region's prices kept on this machine a week; the API asked only for what
is missing or stale, once per region for a class; a failure remembered an hour, with the last
prices (or the shipped table) meanwhile. HOME is a throwaway folder."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

NOW = dt.datetime(2026, 12, 2, 18, 0, 0, tzinfo=dt.UTC)
EU = {"hourly_usd": {"g6.xlarge": 0.8976, "g5.xlarge": 1.123}, "gp3_gib_month_usd": 0.088,
      "public_ipv4_hour_usd": 0.005, "calls": 3}


@pytest.fixture
def cache(plugin):
    return plugin("plugin_utils.lab_price_cache")


class Api:
    """A stand-in for lab_info's O(prices): answers each region from ``answers``, and records
    what it was asked."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers, self.asked = answers, []

    def __call__(self, asks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        self.asked.append(asks)
        return {ask["region"]: self.answers.get(ask["region"], {"failed": True, "msg": "no answer"}) for ask in asks}


def test_a_cold_cache_asks_once_then_a_week_of_runs_ask_nothing(cache, tmp_path: Path) -> None:
    api = Api({"eu-west-1": EU})
    wants = {(str(tmp_path), "eu-west-1"): ({"g6.xlarge", "g5.xlarge"}, 7.0)}
    prices = cache.regional_prices(wants, api, NOW)[(str(tmp_path), "eu-west-1")]
    assert api.asked == [[{"region": "eu-west-1", "instance_types": ["g5.xlarge", "g6.xlarge"], "storage": True}]]
    assert (prices.hourly("g6.xlarge"), prices.gp3_gib_month_usd, prices.from_api) == (0.8976, 0.088, True)
    assert prices.source == "AWS Price List API, eu-west-1, fetched 2026-12-02"
    saved = json.loads((tmp_path / ".gpu_lab/prices/eu-west-1.json").read_text())
    assert saved["fetched"] == "2026-12-02T18:00:00Z" and saved["hourly_usd"]["g5.xlarge"] == 1.123

    six_days = cache.regional_prices(wants, api, NOW + dt.timedelta(days=6, hours=23))
    assert len(api.asked) == 1 and six_days[(str(tmp_path), "eu-west-1")].hourly("g5.xlarge") == 1.123


def test_prices_older_than_the_max_age_are_asked_again(cache, tmp_path: Path) -> None:
    api = Api({"eu-west-1": EU})
    wants = {(str(tmp_path), "eu-west-1"): ({"g6.xlarge"}, 7.0)}
    cache.regional_prices(wants, api, NOW)
    later = {"eu-west-1": EU | {"hourly_usd": {"g6.xlarge": 0.95}}}
    api.answers = later
    prices = cache.regional_prices(wants, api, NOW + dt.timedelta(days=7, minutes=1))
    assert len(api.asked) == 2 and api.asked[1][0]["storage"] is True
    assert prices[(str(tmp_path), "eu-west-1")].hourly("g6.xlarge") == 0.95
    assert prices[(str(tmp_path), "eu-west-1")].source.endswith("fetched 2026-12-09")
    # A shorter gpu_lab_price_max_age_days asks sooner.
    short = {(str(tmp_path), "eu-west-1"): ({"g6.xlarge"}, 1.0)}
    cache.regional_prices(short, api, NOW + dt.timedelta(days=8, hours=1))
    assert len(api.asked) == 3


def test_a_type_not_cached_yet_is_asked_alone(cache, tmp_path: Path) -> None:
    api = Api({"eu-west-1": EU})
    key = (str(tmp_path), "eu-west-1")
    cache.regional_prices({key: ({"g6.xlarge"}, 7.0)}, api, NOW)
    api.answers = {"eu-west-1": {"hourly_usd": {"p3.2xlarge": 3.305}, "calls": 1}}
    prices = cache.regional_prices({key: ({"g6.xlarge", "p3.2xlarge"}, 7.0)}, api, NOW + dt.timedelta(days=1))
    assert api.asked[1] == [{"region": "eu-west-1", "instance_types": ["p3.2xlarge"], "storage": False}]
    assert (prices[key].hourly("p3.2xlarge"), prices[key].hourly("g6.xlarge")) == (3.305, 0.8976)
    assert prices[key].source.endswith("fetched 2026-12-02")  # the older figures' date


def test_a_class_asks_once_per_region(cache, tmp_path: Path) -> None:
    api = Api({"eu-west-1": EU, "us-east-1": EU | {"hourly_usd": {"g6.xlarge": 0.8048}}})
    wants = {(str(tmp_path), "eu-west-1"): ({"g6.xlarge"}, 7.0), (str(tmp_path), "us-east-1"): ({"g6.xlarge"}, 7.0),
             (str(tmp_path / "other"), "eu-west-1"): ({"g5.xlarge"}, 7.0)}
    prices = cache.regional_prices(wants, api, NOW)
    (asks,) = api.asked
    assert sorted((a["region"], tuple(a["instance_types"])) for a in asks) == [
        ("eu-west-1", ("g5.xlarge", "g6.xlarge")), ("us-east-1", ("g6.xlarge",))]
    assert prices[(str(tmp_path), "us-east-1")].hourly("g6.xlarge") == 0.8048
    assert (tmp_path / "other/.gpu_lab/prices/eu-west-1.json").exists()


def test_no_answer_falls_back_to_the_table_says_why_and_waits_an_hour(cache, tmp_path: Path) -> None:
    api = Api({"eu-west-1": {"failed": True, "msg": "no permission for pricing:GetProducts (AccessDeniedException)"}})
    key = (str(tmp_path), "eu-west-1")
    prices = cache.regional_prices({key: ({"g5.xlarge"}, 7.0)}, api, NOW)[key]
    assert prices.from_api is False and prices.hourly("g5.xlarge") == 1.006 and prices.gp3_gib_month_usd == 0.08
    assert prices.source == ("shipped table, us-east-1 list prices 2026-11 (eu-west-1 costs up to about 30 % more), "
                             "AWS Price List not reachable: no permission for pricing:GetProducts "
                             "(AccessDeniedException)")
    cache.regional_prices({key: ({"g5.xlarge"}, 7.0)}, api, NOW + dt.timedelta(minutes=59))
    assert len(api.asked) == 1
    api.answers = {"eu-west-1": EU}
    back = cache.regional_prices({key: ({"g5.xlarge"}, 7.0)}, api, NOW + dt.timedelta(minutes=61))[key]
    assert len(api.asked) == 2 and back.from_api and back.hourly("g5.xlarge") == 1.123
    assert json.loads((tmp_path / ".gpu_lab/prices/eu-west-1.json").read_text())["failed"] == ""


def test_stale_prices_that_cannot_be_refreshed_are_kept_and_said_to_be(cache, tmp_path: Path) -> None:
    api = Api({"eu-west-1": EU})
    key = (str(tmp_path), "eu-west-1")
    cache.regional_prices({key: ({"g5.xlarge"}, 7.0)}, api, NOW)
    api.answers = {}
    prices = cache.regional_prices({key: ({"g5.xlarge"}, 7.0)}, api, NOW + dt.timedelta(days=10))[key]
    assert prices.hourly("g5.xlarge") == 1.123
    assert prices.source == "AWS Price List API, eu-west-1, fetched 2026-12-02 (could not be refreshed: no answer)"


def test_an_unreadable_cache_is_no_cache(cache, tmp_path: Path) -> None:
    path = tmp_path / ".gpu_lab/prices/eu-west-1.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert cache.read(path) == {}
    assert cache.to_ask("eu-west-1", {}, ["g5.xlarge"], NOW) == {
        "region": "eu-west-1", "instance_types": ["g5.xlarge"], "storage": True}
    assert cache.to_ask("eu-west-1", {"fetched": "yesterday"}, ["g5.xlarge"], NOW)["storage"] is True
    # The table for a region never asked: said so.
    assert cache.prices_from("us-east-1", {}, NOW).source == (
        "shipped table, us-east-1 list prices 2026-11, AWS Price List not reachable: not asked yet")


def test_check_mode_uses_the_answer_and_writes_no_file(cache, tmp_path: Path) -> None:
    api = Api({"eu-west-1": EU})
    key = (str(tmp_path), "eu-west-1")
    prices = cache.regional_prices({key: ({"g6.xlarge"}, 7.0)}, api, NOW, keep=False)[key]
    assert prices.hourly("g6.xlarge") == 0.8976 and len(api.asked) == 1
    assert not cache.cache_file(*key).exists()
    cache.regional_prices({key: ({"g6.xlarge"}, 7.0)}, api, NOW)
    assert cache.cache_file(*key).exists()
