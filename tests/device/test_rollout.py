from __future__ import annotations

import datetime as dt
import statistics

from cosgitops.device.rollout import RolloutPlan, parse_time, wariness_from_machine_id

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_wariness_is_stable_and_uniform() -> None:
    assert wariness_from_machine_id("abc") == wariness_from_machine_id("abc\n")
    assert wariness_from_machine_id("abc") != wariness_from_machine_id("abd")
    values = [wariness_from_machine_id(f"machine-{i}") for i in range(4000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert abs(statistics.mean(values) - 0.5) < 0.03
    # every decile of the fleet is populated
    assert {int(v * 10) for v in values} == set(range(10))


def test_linear_ramp_from_start_percentage() -> None:
    plan = RolloutPlan(10, 100, START)
    assert plan.percentage_at(START - dt.timedelta(minutes=1)) == 0.0
    assert plan.percentage_at(START) == 10.0
    assert plan.percentage_at(START + dt.timedelta(minutes=50)) == 55.0
    assert plan.percentage_at(START + dt.timedelta(minutes=100)) == 100.0
    assert plan.percentage_at(START + dt.timedelta(days=30)) == 100.0


def test_a_device_enters_once_and_stays_in() -> None:
    plan = RolloutPlan(10, 600, START)
    for wariness in (0.0, 0.05, 0.3, 0.77, 0.999):
        opens = plan.opens_for(wariness)
        assert opens is not None
        times = [START + dt.timedelta(minutes=m) for m in range(0, 700, 7)]
        admitted = [plan.admits(wariness, t) for t in times]
        assert admitted == sorted(admitted)  # False..., True...: never flips back
        assert plan.admits(wariness, opens + dt.timedelta(seconds=1))
        if opens > START:
            assert not plan.admits(wariness, opens - dt.timedelta(minutes=1))


def test_fraction_of_fleet_admitted_tracks_percentage() -> None:
    plan = RolloutPlan(10, 100, START)
    fleet = [wariness_from_machine_id(f"m{i}") for i in range(5000)]
    at_start = sum(plan.admits(w, START) for w in fleet) / len(fleet)
    halfway = sum(plan.admits(w, START + dt.timedelta(minutes=50)) for w in fleet) / len(fleet)
    assert abs(at_start - 0.10) < 0.02
    assert abs(halfway - 0.55) < 0.03


def test_missing_or_malformed_rollout_means_open() -> None:
    assert RolloutPlan.from_json(None).admits(0.99, START)
    assert RolloutPlan.from_json({"startPercentage": "x"}).admits(0.99, START)
    assert RolloutPlan.from_json({}).admits(0.99, START)
    no_ramp = RolloutPlan.from_json({"startPercentage": 5, "durationMinutes": 0})
    assert no_ramp.admits(0.99, START)
    plan = RolloutPlan.from_json(
        {"startPercentage": 0, "durationMinutes": 60, "start": "2026-01-01T00:00:00Z"}
    )
    assert plan.start == START
    assert not plan.admits(0.5, START + dt.timedelta(minutes=29))
    assert plan.admits(0.5, START + dt.timedelta(minutes=31))


def test_created_time_is_the_fallback_start() -> None:
    plan = RolloutPlan.from_json(
        {"startPercentage": 0, "durationMinutes": 60}, fallback_start="2026-01-01T00:00:00+00:00"
    )
    assert plan.start == START
    assert parse_time("garbage") is None
    assert parse_time("2026-01-01T00:00:00") == START
