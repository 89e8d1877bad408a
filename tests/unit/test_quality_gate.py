"""The quality gate and the model spec: config shape, validation and the checks themselves."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from landfall.config import GateRule, ModelSpec
from landfall.registry import GateCheck, check_gate
from tests.conftest import settings_for


def test_the_demo_config_gates_accuracy_and_latency(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = settings_for(tmp_path).dataset("demo").model
    assert [(r.metric, r.min, r.max) for r in spec.gate] == [
        ("accuracy", 0.8, None),
        ("latency_ms", None, 100.0),
    ]
    assert spec.challenger is None


def test_a_gate_and_a_challenger_from_yaml_shaped_config() -> None:
    spec = ModelSpec.model_validate(
        {
            "uri": "models:/churn@champion",
            "challenger": "challenger",
            "gate": [{"metric": "auc", "min": 0.7, "max": 0.99}, {"metric": "p99_ms", "max": 50}],
        }
    )
    assert (spec.name, spec.alias, spec.challenger) == ("churn", "champion", "challenger")
    assert spec.gate[0].describe() == "auc >= 0.7 and <= 0.99"
    assert spec.gate[1].describe() == "p99_ms <= 50"


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"uri": "models:/churn/3"}, "models:/name@alias"),
        ({"uri": "runs:/abc/model@x"}, "models:/name@alias"),
        ({"uri": "models:/@champion"}, "models:/name@alias"),
        ({"uri": "models:/churn@champion", "challenger": "champion"}, "champion's alias"),
        ({"uri": "models:/churn@champion", "gate": [{"metric": "auc"}]}, "needs a min or a max"),
        (
            {"uri": "models:/churn@c", "gate": [{"metric": "auc", "min": 0.9, "max": 0.1}]},
            "min 0.9 > max 0.1",
        ),
        (
            {
                "uri": "models:/churn@c",
                "gate": [{"metric": "a", "min": 1}, {"metric": "a", "max": 2}],
            },
            "may appear once",
        ),
        ({"uri": "models:/churn@c", "gate": [{"metric": "a", "minimum": 1}]}, "minimum"),
    ],
)
def test_bad_model_specs_are_refused_with_the_reason(model: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        ModelSpec.model_validate(model)


@pytest.mark.parametrize(
    ("rule", "value", "passed", "explained"),
    [
        (GateRule(metric="accuracy", min=0.8), 0.8, True, "accuracy 0.8 passes (accuracy >= 0.8)"),
        (GateRule(metric="accuracy", min=0.8), 0.79, False, "0.79 is below the minimum 0.8"),
        (GateRule(metric="latency_ms", max=100), 100.0, True, "passes"),
        (GateRule(metric="latency_ms", max=100), 101.5, False, "101.5 is above the maximum 100"),
        (GateRule(metric="auc", min=0.5, max=0.99), 0.995, False, "above the maximum 0.99"),
        (GateRule(metric="auc", min=0.5), None, False, "auc is not among the version's registered"),
    ],
)  # fmt: skip
def test_each_rule_checks_its_bound_and_says_why(
    rule: GateRule, value: float | None, passed: bool, explained: str
) -> None:
    check = GateCheck(rule, value)
    assert check.passed is passed
    assert explained in check.explain()
    assert check.describe()["passed"] is passed


def test_check_gate_reads_each_rule_s_metric() -> None:
    rules = [GateRule(metric="accuracy", min=0.8), GateRule(metric="latency_ms", max=100)]
    checks = check_gate(rules, {"accuracy": 0.9, "f1": 0.1})
    assert [(c.rule.metric, c.value, c.passed) for c in checks] == [
        ("accuracy", 0.9, True),
        ("latency_ms", None, False),
    ]
