"""The production-shaped files that cannot run here (no Docker engine) stay well-formed."""

from __future__ import annotations

from pathlib import Path

import yaml

from schemas.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_are_pinned_and_wired() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"kafka", "clickhouse", "worker"}
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"
    env = services["worker"]["environment"]
    assert env["METERING_BROKER_URL"] == "kafka://kafka:9092"
    assert env["METERING_STORE_URL"].startswith("clickhouse://clickhouse:9000/")
    mounted = services["worker"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).is_file()
    assert (ROOT / services["worker"]["build"]["dockerfile"]).is_file()


def test_example_catalog_loads() -> None:
    catalog = load_catalog(ROOT / "deploy" / "examples" / "catalog.yaml")
    assert catalog.plans["power"].included_users == 5
