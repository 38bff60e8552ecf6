"""The channel registry: every registered channel has a label for people beside its unit."""
from __future__ import annotations

from dashboard.telemetry.channels import REGISTRY, Channel


def test_every_registered_channel_has_its_own_label() -> None:
    labels = [channel.label for channel in REGISTRY.values()]
    assert all(label and label.strip() == label for label in labels)
    assert len(set(labels)) == len(labels)  # two tiles never read the same
    assert REGISTRY["engine_load"].title == "Engine load" and REGISTRY["engine_load"].unit == "%"


def test_a_channel_without_a_label_is_titled_by_its_name() -> None:
    assert Channel("brake_bias", "%", "Front brake bias").title == "brake_bias"
