from __future__ import annotations

from plugins.lookup.ec2_regions import LookupModule


def test_lists_known_regions_offline() -> None:
    regions = LookupModule().run([])
    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= set(regions)
    assert "us-easst-1" not in regions
    assert regions == sorted(regions)
